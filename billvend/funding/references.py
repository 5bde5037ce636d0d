"""Our funding references and the references that come from outside.

A funding's ``reference`` is ours (:func:`new_funding_reference`); a reference
from outside (a callback URL, a webhook, the gateway's list) is only looked up
once it has the shape :data:`EXTERNAL_REFERENCE_RE` allows.
"""

from __future__ import annotations

import re
import secrets
from typing import Optional

import sqlalchemy as sa

from billvend.accounts.models import User
from billvend.funding.models import Funding
from billvend.platform.extensions import db


def new_funding_reference() -> str:
    """A unique reference for a funding, e.g. ``FND-3f9a...`` (28 characters)."""
    return "FND-" + secrets.token_hex(12)


#: What a reference from outside (a callback URL, a webhook) may look like:
#: printable ASCII without spaces (Paystack: alphanumerics and ``-.=``).
EXTERNAL_REFERENCE_RE = re.compile(r"[\x21-\x7e]{1,100}")


def funding_for_user(reference: str, user: User) -> Optional[Funding]:
    """The funding with our ``reference`` if it belongs to ``user``, else None
    (another customer's reference is "not found" too)."""
    if (not isinstance(reference, str) or len(reference) > 40
            or not EXTERNAL_REFERENCE_RE.fullmatch(reference)):
        return None
    return db.session.scalar(
        sa.select(Funding).where(Funding.reference == reference, Funding.user_id == user.id))
