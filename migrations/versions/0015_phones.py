"""notif2 (issue 23): phones stored E.164, Nigerian mobiles only

Revision ID: 0015_phones
Revises: 0014_notifications

Every stored phone (users.phone, payments.phone, saved_meters.last_phone)
becomes E.164 (``+2348031234567``) when ``phonenumbers`` reads it as a valid
Nigerian mobile number. One that cannot be is never guessed:

- users: the text moves to users.phone_to_fix (new, nullable) and phone
  becomes NULL; the dashboard asks the customer for the number at the next
  visit, and no SMS goes to it meanwhile;
- payments: kept as written (it is the record of what the disco was sent);
  no message is sent to a phone that is not E.164;
- saved_meters: the prefill is emptied ('' ; the account's phone is used).

The rule is copied here, frozen, rather than imported from billvend (code
changes, a migration must not). Downgrade gives users and saved meters the
national 080... form back and puts set-aside phones back; payments keep
what they hold (a downgrade never rewrites the books, and the older code
reads an E.164 phone as well).
"""
from typing import Optional

import phonenumbers
import sqlalchemy as sa
from alembic import op

revision = "0015_phones"
down_revision = "0014_notifications"
branch_labels = None
depends_on = None

_MOBILE = {phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE}


def _e164(text: Optional[str]) -> Optional[str]:
    raw = (text or "").strip()
    if not raw or len(raw) > 40:
        return None
    if raw.startswith("234"):
        raw = "+" + raw
    try:
        number = phonenumbers.parse(raw, "NG")
    except phonenumbers.NumberParseException:
        return None
    if (phonenumbers.region_code_for_number(number) != "NG" or not phonenumbers.is_valid_number(number)
            or phonenumbers.number_type(number) not in _MOBILE):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _national(phone: Optional[str]) -> Optional[str]:
    if phone and phone.startswith("+234"):
        return "0" + phone[4:]
    return phone


def _tables():
    users = sa.table("users", sa.column("id", sa.Integer), sa.column("phone", sa.String),
                     sa.column("phone_to_fix", sa.String))
    payments = sa.table("payments", sa.column("id", sa.Integer), sa.column("phone", sa.String))
    meters = sa.table("saved_meters", sa.column("id", sa.Integer), sa.column("last_phone", sa.String))
    return users, payments, meters


def upgrade():
    op.add_column("users", sa.Column("phone_to_fix", sa.String(length=40), nullable=True))
    conn = op.get_bind()
    users, payments, meters = _tables()
    for user_id, phone in conn.execute(sa.select(users.c.id, users.c.phone).where(users.c.phone.is_not(None))):
        e164 = _e164(phone)
        if e164:
            values = {"phone": e164}
        else:  # set aside, never guessed; an empty one is simply none
            values = {"phone": None, "phone_to_fix": phone.strip()[:40] or None}
        conn.execute(sa.update(users).where(users.c.id == user_id).values(**values))
    for payment_id, phone in conn.execute(sa.select(payments.c.id, payments.c.phone)):
        e164 = _e164(phone)
        if e164 and e164 != phone:
            conn.execute(sa.update(payments).where(payments.c.id == payment_id).values(phone=e164))
    for meter_id, phone in conn.execute(sa.select(meters.c.id, meters.c.last_phone)):
        e164 = _e164(phone) or ""
        if e164 != phone:
            conn.execute(sa.update(meters).where(meters.c.id == meter_id).values(last_phone=e164))


def downgrade():
    conn = op.get_bind()
    users, _, meters = _tables()
    for user_id, phone, to_fix in conn.execute(sa.select(users.c.id, users.c.phone, users.c.phone_to_fix)):
        conn.execute(sa.update(users).where(users.c.id == user_id).values(phone=to_fix or _national(phone)))
    for meter_id, phone in conn.execute(sa.select(meters.c.id, meters.c.last_phone)):
        conn.execute(sa.update(meters).where(meters.c.id == meter_id).values(last_phone=_national(phone)))
    with op.batch_alter_table("users") as batch:
        batch.drop_column("phone_to_fix")
