"""Retired: PostgreSQL functions that ran a step's effect and record in one statement

This revision once created stored functions that repeated the Python steps (quota_reserve,
entry_create, quota_commit) in PL/pgSQL. Every step now has one implementation, in Python
(tasks/create/), run by one runner (tasks/runner.py); revision 0006 drops what this revision
created in databases that ran it. On a new database it does nothing. It stays in the chain of
revisions so that databases stamped 0004 or 0005 upgrade as before.

Revision ID: 0004
Revises: 0003
"""

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
