"""Retired: planned step calls (`flow_runs.plans`)

This revision once added `flow_runs.plans` and more stored functions, so that a step could run
as a call prepared by an earlier step. Every step now has one implementation, in Python, run by
one runner (tasks/runner.py); revision 0006 drops the column and the functions in databases that
ran this revision. On a new database it does nothing.

Revision ID: 0005
Revises: 0004
"""

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
