"""Vending providers: the interface, the simulator, and the discos we sell for."""

from __future__ import annotations

from flask import current_app

from billvend.vending.providers.base import MeterVerification, Provider, VendResult

__all__ = ["DISCOS", "MeterVerification", "Provider", "VendResult", "get_provider"]

#: VTpass electricity ``serviceID`` -> display name (reference/vtpass-api.md).
DISCOS: dict[str, str] = {
    "ikeja-electric": "Ikeja Electric (IKEDC)",
    "eko-electric": "Eko Electric (EKEDC)",
    "abuja-electric": "Abuja Electric (AEDC)",
    "kano-electric": "Kano Electric (KEDCO)",
    "portharcourt-electric": "Port Harcourt Electric (PHED)",
    "jos-electric": "Jos Electric (JED)",
    "kaduna-electric": "Kaduna Electric (KAEDCO)",
    "enugu-electric": "Enugu Electric (EEDC)",
    "ibadan-electric": "Ibadan Electric (IBEDC)",
    "benin-electric": "Benin Electric (BEDC)",
    "aba-electric": "Aba Power (APLE)",
    "yola-electric": "Yola Electric (YEDC)",
}


def get_provider() -> Provider:
    """The provider named by ``VENDING_PROVIDER`` for the current app, timed
    call by call into the metrics (``billvend.platform.metrics.TimedProvider``).

    :raises ValueError: for an unknown provider name.
    """
    from billvend.platform.metrics import TimedProvider
    from billvend.vending.telemetry import disco_of

    return TimedProvider(_make_provider(), disco_of=disco_of)


def _make_provider() -> Provider:
    config = current_app.config
    name = config["VENDING_PROVIDER"]
    if name == "simulated":
        from billvend.platform.extensions import db
        from billvend.vending.providers.simulated import SimulatedProvider

        return SimulatedProvider(
            db.engine,
            success_rate=config["SIMULATOR_SUCCESS_RATE"],
            delay_seconds=config["SIMULATOR_DELAY_SECONDS"],
        )
    if name == "vtpass":
        from billvend.platform.config import vend_deadline_seconds
        from billvend.vending.providers.vtpass import VTpassProvider

        return VTpassProvider(
            config["VTPASS_BASE_URL"],
            config["VTPASS_API_KEY"],
            config["VTPASS_SECRET_KEY"],
            connect_timeout_seconds=config["VTPASS_CONNECT_TIMEOUT_SECONDS"],
            read_timeout_seconds=config["VTPASS_READ_TIMEOUT_SECONDS"],
            verify_timeout_seconds=config["VTPASS_VERIFY_TIMEOUT_SECONDS"],
            send_attempts=config["VTPASS_SEND_ATTEMPTS"],
            deadline_seconds=vend_deadline_seconds(config),
        )
    raise ValueError(f"unknown VENDING_PROVIDER {name!r}")
