"""One step path: drop the stored step functions and `flow_runs.plans`

Databases that ran the first versions of revisions 0004 and 0005 hold stored functions that
repeated the steps in PL/pgSQL, and a `plans` column on `flow_runs`. Steps now run only in
Python (tasks/runner.py), so both go. Flows in flight keep working: their step records are on
the flow row, which the single runner reads; a plan left on a row is simply dropped with the
column. On a database created after this change there is nothing to drop.

Downgrading does not bring the functions back (their code is gone); it restores the column only.

Revision ID: 0006
Revises: 0005
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# Every function the earlier revisions 0004 and 0005 created, by signature.
RETIRED_FUNCTIONS = [
    "volchain_run_planned(varchar, text, timestamp, text)",
    "volchain_jsonb_texts(jsonb)",
    "volchain_record_step_and_plans(varchar, text, json, timestamp, boolean, jsonb)",
    "volchain_quota_commit(varchar, text, json, timestamp, varchar, text[], text[])",
    "volchain_quota_reserve(varchar, text, json, timestamp, varchar, text[], bigint[], bigint[], text[], "
    "timestamp, bigint, bigint)",
    "volchain_entry_create(varchar, text, json, timestamp, jsonb, text[], text[])",
    "volchain_record_step(varchar, text, json, timestamp, boolean)",
    "volchain_write_record(varchar, text, json, timestamp, boolean)",
    "volchain_claim_step(varchar, text)",
]


def upgrade() -> None:
    for signature in RETIRED_FUNCTIONS:
        op.execute(f"DROP FUNCTION IF EXISTS {signature}")
    op.execute("ALTER TABLE flow_runs DROP COLUMN IF EXISTS plans")


def downgrade() -> None:
    op.add_column("flow_runs", sa.Column("plans", postgresql.JSONB(), nullable=True))
