"""Transfers between customers on the admin audit pages (issue 27): every
``p2p_transfers`` row, newest first, with both parties, the note and the
ledger transfer that posted it. Read-only: a transfer between customers has
no admin action."""

from __future__ import annotations

import sqlalchemy as sa
import sqlalchemy.orm as so
from flask import render_template

from billvend.ledger.models import KIND_P2P, Transfer
from billvend.platform.extensions import db
from billvend.transfers.models import P2PTransfer
from billvend.web.admin import bp
from billvend.web.forms import query_int

PAGE_SIZE = 50


@bp.route("/p2p")
def p2p_transfers():
    """``?before=<id>``: the page of transfers older than that id (keyset)."""
    before = query_int("before")
    query = (sa.select(P2PTransfer, Transfer.id)
             .outerjoin(Transfer, sa.and_(Transfer.p2p_transfer_id == P2PTransfer.id, Transfer.kind == KIND_P2P))
             .options(so.joinedload(P2PTransfer.sender), so.joinedload(P2PTransfer.recipient))
             .order_by(P2PTransfer.id.desc()).limit(PAGE_SIZE + 1))
    if before is not None:
        query = query.where(P2PTransfer.id < before)
    rows = db.session.execute(query).all()
    older = rows[PAGE_SIZE - 1][0].id if len(rows) > PAGE_SIZE else None
    return render_template("admin/p2p.html", rows=rows[:PAGE_SIZE], older=older)
