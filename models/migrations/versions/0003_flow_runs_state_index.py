"""flow_runs: index the state alone, so recording a step can be a HOT update

Every step rewrites its flow row's `steps` and `progress_at`. With `progress_at` in an index,
each of those updates also wrote every index of the table; now only the last step (which
changes `state`) must, and the others are HOT updates when the page has room (measured: about
70% of a create's flow-row updates, against none before). The sweeper finds stuck flows through
the state index (the running and compensating flows are few) and filters them by `progress_at`.

Revision ID: 0003
Revises: 0002
"""
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_flow_runs_state_progress", table_name="flow_runs")
    op.create_index("ix_flow_runs_state", "flow_runs", ["state"])


def downgrade() -> None:
    op.drop_index("ix_flow_runs_state", table_name="flow_runs")
    op.create_index("ix_flow_runs_state_progress", "flow_runs", ["state", "progress_at"])
