"""Quota repairs and the flow log's pruning index

Adds `ix_flow_runs_finished`, a partial index on `flow_runs.finished_at` for the finished flows
the retention prunes (tasks/retention.py), and `quota_repairs`: one row per usage field the reconciler (tasks/reconcile.py) changed, with
the project, resource, field, old value (NULL: there was no usage row), new value, when, and
whether an operator (`manual`) or the schedule (`scheduled`) ran it. Only an addition: the
previous release keeps working on the upgraded schema.

Revision ID: 0008
Revises: 0007
"""
from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('quota_repairs',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('project_id', sa.String(length=255), nullable=False),
    sa.Column('resource', sa.String(length=300), nullable=False),
    sa.Column('field', sa.String(length=16), nullable=False),
    sa.Column('old', sa.BigInteger(), nullable=True),
    sa.Column('new', sa.BigInteger(), nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_quota_repairs'))
    )
    with op.batch_alter_table('quota_repairs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_quota_repairs_project_id'), ['project_id'], unique=False)
    op.create_index('ix_flow_runs_finished', 'flow_runs', ['finished_at'], unique=False,
                    postgresql_where=sa.text("state IN ('succeeded', 'reverted')"))


def downgrade() -> None:
    op.drop_index('ix_flow_runs_finished', table_name='flow_runs')
    with op.batch_alter_table('quota_repairs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_quota_repairs_project_id'))

    op.drop_table('quota_repairs')
