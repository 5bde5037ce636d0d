"""The invariants of transfers between customers (registered with the ledger's
checker on import; the app factory imports this module).

``p2p_matches``: each ledger transfer of kind ``p2p`` moves money from one
user wallet to another and names its own ``p2p_transfers`` row
(``transfers.p2p_transfer_id``) with the same amount, the sender's wallet as
its debit and the recipient's as its credit (wallets owned by the row's
``sender_id`` and ``recipient_id``); and each ``p2p_transfers`` row has
exactly one such ledger transfer (they are written in one unit of work).
"""

from __future__ import annotations

import sqlalchemy as sa

from billvend.ledger.invariants import Violation, register, register_transfer_rule
from billvend.ledger.models import KIND_P2P, Transfer, Wallet
from billvend.platform.extensions import db
from billvend.transfers.models import P2PTransfer


def _owned_by(wallet_id, user_id) -> sa.ColumnElement[bool]:
    owner = sa.orm.aliased(Wallet)
    return sa.exists(sa.select(owner.id).where(owner.id == wallet_id, owner.user_id == user_id))


def _matches_its_row() -> sa.ColumnElement[bool]:
    """SQL over :class:`Transfer`: its ``p2p_transfers`` row exists and agrees,
    and the wallets are those of the row's sender and recipient (a row naming
    Bola as recipient while Carol's wallet was credited is no match)."""
    return sa.exists(sa.select(P2PTransfer.id).where(
        P2PTransfer.id == Transfer.p2p_transfer_id,
        P2PTransfer.amount_kobo == Transfer.amount_kobo,
        P2PTransfer.sender_wallet_id == Transfer.debit_wallet_id,
        P2PTransfer.recipient_wallet_id == Transfer.credit_wallet_id,
        _owned_by(P2PTransfer.sender_wallet_id, P2PTransfer.sender_id),
        _owned_by(P2PTransfer.recipient_wallet_id, P2PTransfer.recipient_id)))


@register({
    "p2p_matches": "Each p2p transfer moves money between two user wallets and has its own "
                   "p2p_transfers row with the same amount, sender and recipient wallets (and each "
                   "row exactly one p2p transfer)",
})
def check_p2p() -> list[Violation]:
    """``p2p_matches``, both ways: ledger transfers without a matching row or
    between wallets that are not both user wallets; rows without exactly one
    ledger transfer."""
    debit_wallet, credit_wallet = sa.orm.aliased(Wallet), sa.orm.aliased(Wallet)
    violations = [
        Violation("p2p_matches", "transfer", transfer_id,
                  f"p2p of {amount} kobo from wallet {debit_id} to wallet {credit_id} (row "
                  f"{row_id}): no p2p row with this amount and these wallets, or not two user wallets")
        for transfer_id, amount, debit_id, credit_id, row_id in db.session.execute(
            sa.select(Transfer.id, Transfer.amount_kobo, Transfer.debit_wallet_id,
                      Transfer.credit_wallet_id, Transfer.p2p_transfer_id)
            .join(debit_wallet, debit_wallet.id == Transfer.debit_wallet_id)
            .join(credit_wallet, credit_wallet.id == Transfer.credit_wallet_id)
            .where(Transfer.kind == KIND_P2P)
            .where(sa.or_(sa.not_(_matches_its_row()), debit_wallet.user_id.is_(None),
                          credit_wallet.user_id.is_(None))))
    ]
    posted = (sa.select(sa.func.count(Transfer.id))
              .where(Transfer.p2p_transfer_id == P2PTransfer.id, Transfer.kind == KIND_P2P)
              .scalar_subquery())
    violations.extend(
        Violation("p2p_matches", "p2p_transfer", row_id,
                  f"transfer {reference} has {count} p2p ledger transfers, not 1")
        for row_id, reference, count in db.session.execute(
            sa.select(P2PTransfer.id, P2PTransfer.reference, posted).where(posted != 1)))
    return violations


register_transfer_rule(KIND_P2P, "p2p_matches", _matches_its_row)
