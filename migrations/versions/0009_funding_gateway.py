"""funding gateway: Paystack-style card checkout and bank transfer (issue 15)

Revision ID: 0009_funding_gateway
Revises: 0008_web_tier

Fundings gain the gateway's answer (fees, channel, status, paid_at), the
sweep's backoff (verify_attempts, next_verify_at), a flag for admins, and
UNIQUE (gateway, gateway_reference): one funding, so one credit, per gateway
reference. New tables: dedicated_accounts, gateway_events (webhooks),
reconciliation_runs and reconciliation_items. admin_actions.funding_id for
audited admin actions on fundings.
"""
import sqlalchemy as sa
from alembic import op

revision = '0009_funding_gateway'
down_revision = '0008_web_tier'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('reconciliation_runs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('gateway', sa.String(length=32), nullable=False),
    sa.Column('gateway_transactions', sa.Integer(), nullable=False),
    sa.Column('matched', sa.Integer(), nullable=False),
    sa.Column('credited', sa.Integer(), nullable=False),
    sa.Column('flagged', sa.Integer(), nullable=False),
    sa.Column('error', sa.String(length=500), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_reconciliation_runs'))
    )
    with op.batch_alter_table('reconciliation_runs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_reconciliation_runs_day'), ['day'], unique=False)

    op.create_table('dedicated_accounts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('gateway', sa.String(length=32), nullable=False),
    sa.Column('customer_code', sa.String(length=64), nullable=False),
    sa.Column('account_number', sa.String(length=20), nullable=False),
    sa.Column('account_name', sa.String(length=200), nullable=False),
    sa.Column('bank_name', sa.String(length=100), nullable=False),
    sa.Column('bank_slug', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_dedicated_accounts_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dedicated_accounts')),
    sa.UniqueConstraint('account_number', name=op.f('uq_dedicated_accounts_account_number')),
    sa.UniqueConstraint('user_id', name=op.f('uq_dedicated_accounts_user_id'))
    )
    with op.batch_alter_table('dedicated_accounts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_dedicated_accounts_customer_code'), ['customer_code'], unique=False)

    op.create_table('gateway_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('gateway', sa.String(length=32), nullable=False),
    sa.Column('event', sa.String(length=64), nullable=False),
    sa.Column('reference', sa.String(length=100), nullable=False),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.Column('deliveries', sa.Integer(), server_default='1', nullable=False),
    sa.Column('funding_id', sa.Integer(), nullable=True),
    sa.Column('outcome', sa.String(length=300), nullable=True),
    sa.Column('needs_attention', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('processed_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['funding_id'], ['fundings.id'], name=op.f('fk_gateway_events_funding_id_fundings')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_gateway_events')),
    sa.UniqueConstraint('gateway', 'event', 'reference', name=op.f('uq_gateway_events_gateway_event_reference'))
    )
    with op.batch_alter_table('gateway_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_gateway_events_funding_id'), ['funding_id'], unique=False)
        batch_op.create_index('ix_gateway_events_received_at', ['received_at'], unique=False)

    op.create_table('reconciliation_items',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('gateway_reference', sa.String(length=100), nullable=True),
    sa.Column('funding_id', sa.Integer(), nullable=True),
    sa.Column('gateway_amount_kobo', sa.BigInteger(), nullable=True),
    sa.Column('detail', sa.String(length=500), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['funding_id'], ['fundings.id'], name=op.f('fk_reconciliation_items_funding_id_fundings')),
    sa.ForeignKeyConstraint(['run_id'], ['reconciliation_runs.id'], name=op.f('fk_reconciliation_items_run_id_reconciliation_runs')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_reconciliation_items'))
    )
    with op.batch_alter_table('reconciliation_items', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_reconciliation_items_funding_id'), ['funding_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_reconciliation_items_run_id'), ['run_id'], unique=False)

    with op.batch_alter_table('admin_actions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('funding_id', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_admin_actions_funding_id'), ['funding_id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_admin_actions_funding_id_fundings'), 'fundings', ['funding_id'], ['id'])

    with op.batch_alter_table('fundings', schema=None) as batch_op:
        batch_op.add_column(sa.Column('method', sa.String(length=16), server_default='card', nullable=False))
        batch_op.add_column(sa.Column('authorization_url', sa.String(length=500), nullable=True))
        batch_op.add_column(sa.Column('fees_kobo', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('channel', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('gateway_status', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('gateway_message', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('paid_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('credited_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('verify_attempts', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('next_verify_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('needs_attention', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column('attention_reason', sa.String(length=500), nullable=True))
        batch_op.add_column(sa.Column('updated_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index('ix_fundings_created_at', ['created_at'], unique=False)
        batch_op.create_index('ix_fundings_status_next_verify_at', ['status', 'next_verify_at'], unique=False)
        batch_op.create_unique_constraint(batch_op.f('uq_fundings_gateway_gateway_reference'), ['gateway', 'gateway_reference'])
        batch_op.create_check_constraint(
            batch_op.f('ck_fundings_status_known'),
            "status IN ('initiated', 'pending', 'succeeded', 'failed')")

    # Rows from before: last changed when made.
    op.execute("UPDATE fundings SET updated_at = created_at")
    with op.batch_alter_table('fundings', schema=None) as batch_op:
        batch_op.alter_column('updated_at', existing_type=sa.DateTime(timezone=True), nullable=False)



def downgrade():
    with op.batch_alter_table('fundings', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('ck_fundings_status_known'), type_='check')
        batch_op.drop_constraint(batch_op.f('uq_fundings_gateway_gateway_reference'), type_='unique')
        batch_op.drop_index('ix_fundings_status_next_verify_at')
        batch_op.drop_index('ix_fundings_created_at')
        batch_op.drop_column('updated_at')
        batch_op.drop_column('attention_reason')
        batch_op.drop_column('needs_attention')
        batch_op.drop_column('next_verify_at')
        batch_op.drop_column('verify_attempts')
        batch_op.drop_column('credited_at')
        batch_op.drop_column('paid_at')
        batch_op.drop_column('gateway_message')
        batch_op.drop_column('gateway_status')
        batch_op.drop_column('channel')
        batch_op.drop_column('fees_kobo')
        batch_op.drop_column('authorization_url')
        batch_op.drop_column('method')

    with op.batch_alter_table('admin_actions', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_admin_actions_funding_id_fundings'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_admin_actions_funding_id'))
        batch_op.drop_column('funding_id')

    with op.batch_alter_table('reconciliation_items', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_reconciliation_items_run_id'))
        batch_op.drop_index(batch_op.f('ix_reconciliation_items_funding_id'))

    op.drop_table('reconciliation_items')
    with op.batch_alter_table('gateway_events', schema=None) as batch_op:
        batch_op.drop_index('ix_gateway_events_received_at')
        batch_op.drop_index(batch_op.f('ix_gateway_events_funding_id'))

    op.drop_table('gateway_events')
    with op.batch_alter_table('dedicated_accounts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_dedicated_accounts_customer_code'))

    op.drop_table('dedicated_accounts')
    with op.batch_alter_table('reconciliation_runs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_reconciliation_runs_day'))

    op.drop_table('reconciliation_runs')
