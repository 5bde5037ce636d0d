"""Issue 20: fundings.customer_code; gateway events keyed by their body too

Revision ID: 0013_funding_customer_code
Revises: 0012_security_events

A bank-transfer arrival is credited only to the customer the gateway's
verify names (issue 20, item 1); the funding keeps that customer code. A new
nullable column: no batch rebuild needed on SQLite. Arrivals recorded before
this revision get the code of their user's dedicated account, the only
customer they could have been credited to.

gateway_events gets payload_sha256 (the raw body's digest, filled in for
stored rows) and is unique per (gateway, event, reference, payload_sha256):
a webhook saying something else about a reference than a stored one (another
customer) is its own event, so a flagged forgery never hides the genuine
delivery. A batch rebuild on SQLite (the unique constraint changes).
"""
import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0013_funding_customer_code"
down_revision = "0012_security_events"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("fundings", sa.Column("customer_code", sa.String(length=64), nullable=True))
    op.execute(
        "UPDATE fundings SET customer_code = (SELECT dedicated_accounts.customer_code "
        "FROM dedicated_accounts WHERE dedicated_accounts.user_id = fundings.user_id) "
        "WHERE method = 'bank_transfer'")
    op.add_column("gateway_events", sa.Column("payload_sha256", sa.String(length=64), nullable=True))
    conn = op.get_bind()
    events = sa.table("gateway_events", sa.column("id", sa.Integer), sa.column("payload", sa.Text),
                      sa.column("payload_sha256", sa.String))
    for event_id, payload in conn.execute(sa.select(events.c.id, events.c.payload)).all():
        conn.execute(sa.update(events).where(events.c.id == event_id).values(
            payload_sha256=hashlib.sha256(payload.encode("utf-8")).hexdigest()))
    with op.batch_alter_table("gateway_events") as batch:
        batch.alter_column("payload_sha256", existing_type=sa.String(length=64), nullable=False)
        batch.drop_constraint(op.f("uq_gateway_events_gateway_event_reference"), type_="unique")
        batch.create_unique_constraint(op.f("uq_gateway_events_gateway_event_reference_payload_sha256"),
                                       ["gateway", "event", "reference", "payload_sha256"])


def downgrade():
    with op.batch_alter_table("gateway_events") as batch:
        # Keeps the first stored body of each (gateway, event, reference).
        batch.drop_constraint(op.f("uq_gateway_events_gateway_event_reference_payload_sha256"),
                              type_="unique")
    op.execute("DELETE FROM gateway_events WHERE id NOT IN (SELECT MIN(id) FROM gateway_events "
               "GROUP BY gateway, event, reference)")
    with op.batch_alter_table("gateway_events") as batch:
        batch.drop_column("payload_sha256")
        batch.create_unique_constraint(op.f("uq_gateway_events_gateway_event_reference"),
                                       ["gateway", "event", "reference"])
    with op.batch_alter_table("fundings") as batch:
        batch.drop_column("customer_code")
