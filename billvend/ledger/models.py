"""Tables of the ledger: wallets, transfers and their entries (changed only through
billvend.ledger.services), transfer kinds and system wallets."""

from __future__ import annotations

from datetime import datetime
from typing import Optional
import sqlalchemy as sa
import sqlalchemy.orm as so

from billvend.platform.extensions import db
from billvend.ledger.pg_transfer import DROP_TRANSFER_FUNCTION_SQL, TRANSFER_FUNCTION_SQL
from billvend.platform.models import utcnow, UTCDateTime, _in
from billvend.accounts.models import User


# Transfer kinds.
KIND_FUNDING = "funding"


KIND_BILL_PAYMENT = "bill_payment"


KIND_REVERSAL = "reversal"


#: An approved admin correction (billvend.adjustments): ``adjustments`` -> customer (a credit)
#: or customer -> ``adjustments`` (a debit).
KIND_ADJUSTMENT = "adjustment"


#: An approved goodwill bonus (billvend.adjustments): ``promotions`` -> customer.
KIND_BONUS = "bonus"
#: Money from one customer's wallet to another's (billvend.transfers).
KIND_P2P = "p2p"


TRANSFER_KINDS = (KIND_FUNDING, KIND_BILL_PAYMENT, KIND_REVERSAL, KIND_ADJUSTMENT, KIND_BONUS, KIND_P2P)


# System wallets (no user).
FUNDING_WALLET = "funding"


BILLER_CLEARING_WALLET = "biller_clearing"


#: The business's side of approved corrections: debits in, credits out (may go negative).
ADJUSTMENTS_WALLET = "adjustments"


#: The business's side of approved bonuses: every bonus comes out of it (runs negative).
PROMOTIONS_WALLET = "promotions"


SYSTEM_WALLETS = (FUNDING_WALLET, BILLER_CLEARING_WALLET, ADJUSTMENTS_WALLET, PROMOTIONS_WALLET)


class Wallet(db.Model):
    """A balance: a user's wallet, or a system wallet named by ``system_code``.

    ``version`` increments with every ledger entry on the wallet; it is the
    ORM's optimistic-locking column and the sequence number of the wallet's
    statement (UNIQUE with the wallet on ``ledger_entries``).
    """

    __tablename__ = "wallets"
    __table_args__ = (
        sa.CheckConstraint(
            "user_id IS NULL OR balance_kobo >= 0", name="user_wallet_not_negative"
        ),
        sa.CheckConstraint(
            "(user_id IS NULL) <> (system_code IS NULL)", name="owner_xor_system_code"
        ),
    )

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    user_id: so.Mapped[Optional[int]] = so.mapped_column(
        sa.ForeignKey("users.id"), unique=True
    )
    system_code: so.Mapped[Optional[str]] = so.mapped_column(sa.String(32), unique=True)
    balance_kobo: so.Mapped[int] = so.mapped_column(sa.BigInteger, default=0)
    version: so.Mapped[int] = so.mapped_column(default=0)
    created_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime(), default=utcnow)

    user: so.Mapped[Optional[User]] = so.relationship(back_populates="wallet")

    # version_generator=False: the ledger bumps ``version`` itself, in the same
    # conditional UPDATE that moves the balance; the ORM still checks it on
    # any ORM flush of a loaded wallet, so a stale object can never overwrite.
    __mapper_args__ = {"version_id_col": version, "version_id_generator": False}

    @property
    def label(self) -> str:
        return self.system_code or (self.user.email if self.user else f"wallet {self.id}")

    def __repr__(self) -> str:
        return f"<Wallet {self.id} {self.label} {self.balance_kobo}>"


class Transfer(db.Model):
    """One movement of money between two wallets (two ledger entries)."""

    __tablename__ = "transfers"
    __table_args__ = (
        sa.CheckConstraint("amount_kobo > 0", name="amount_positive"),
        sa.CheckConstraint("debit_wallet_id <> credit_wallet_id", name="distinct_wallets"),
        sa.CheckConstraint(_in("kind", TRANSFER_KINDS), name="kind_known"),
        # At most one debit and one reversal per payment, enforced by the
        # database as well as by the state machine (DESIGN.md invariant 4).
        sa.UniqueConstraint("payment_id", "kind"),
        sa.UniqueConstraint("funding_id"),
        # One ledger transfer per customer-to-customer transfer.
        sa.UniqueConstraint("p2p_transfer_id"),
        # One posting per approved adjustment (billvend.adjustments), enforced here too.
        sa.UniqueConstraint("adjustment_id", "kind"),
    )

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    kind: so.Mapped[str] = so.mapped_column(sa.String(20))
    # Deferred to COMMIT: see billvend.ledger.pg_transfer (no KEY SHARE on a hot
    # wallet before the transfer holds it).
    debit_wallet_id: so.Mapped[int] = so.mapped_column(
        sa.ForeignKey("wallets.id", deferrable=True, initially="DEFERRED"))
    credit_wallet_id: so.Mapped[int] = so.mapped_column(
        sa.ForeignKey("wallets.id", deferrable=True, initially="DEFERRED"))
    amount_kobo: so.Mapped[int] = so.mapped_column(sa.BigInteger)
    payment_id: so.Mapped[Optional[int]] = so.mapped_column(sa.ForeignKey("payments.id"))
    funding_id: so.Mapped[Optional[int]] = so.mapped_column(sa.ForeignKey("fundings.id"))
    p2p_transfer_id: so.Mapped[Optional[int]] = so.mapped_column(sa.ForeignKey("p2p_transfers.id"))
    #: The approved adjustment or bonus this transfer posts (kinds ``adjustment``, ``bonus``).
    adjustment_id: so.Mapped[Optional[int]] = so.mapped_column(sa.ForeignKey("adjustments.id"))
    description: so.Mapped[Optional[str]] = so.mapped_column(sa.String(200))
    created_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime(), default=utcnow)

    entries: so.Mapped[list["LedgerEntry"]] = so.relationship(
        back_populates="transfer", order_by="LedgerEntry.id"
    )
    payment: so.Mapped[Optional["Payment"]] = so.relationship()
    funding: so.Mapped[Optional["Funding"]] = so.relationship()
    p2p_transfer: so.Mapped[Optional["P2PTransfer"]] = so.relationship()


class LedgerEntry(db.Model):
    """One wallet's side of a transfer; a wallet's entries are its statement."""

    __tablename__ = "ledger_entries"
    __table_args__ = (
        sa.UniqueConstraint("wallet_id", "wallet_version"),
        sa.CheckConstraint("delta_kobo <> 0", name="delta_nonzero"),
    )

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    transfer_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("transfers.id"), index=True)
    wallet_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("wallets.id"))
    delta_kobo: so.Mapped[int] = so.mapped_column(sa.BigInteger)
    balance_after_kobo: so.Mapped[int] = so.mapped_column(sa.BigInteger)
    wallet_version: so.Mapped[int] = so.mapped_column()
    created_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime(), default=utcnow)

    transfer: so.Mapped[Transfer] = so.relationship(back_populates="entries")
    wallet: so.Mapped[Wallet] = so.relationship()


# create_all / drop_all (tests, benchmarks) make and drop the PostgreSQL
# transfer function (billvend.ledger.pg_transfer) with the tables.
sa.event.listen(LedgerEntry.__table__, "after_create",
                sa.DDL(TRANSFER_FUNCTION_SQL.replace("%", "%%")).execute_if(dialect="postgresql"))


sa.event.listen(LedgerEntry.__table__, "before_drop",
                sa.DDL(DROP_TRANSFER_FUNCTION_SQL).execute_if(dialect="postgresql"))
