"""One step path: drop the stored step functions and `flow_runs.plans`

Databases that ran the first versions of revisions 0004 and 0005 hold stored functions that
repeated the steps in PL/pgSQL (all named `volchain_…`), and a `plans` column on `flow_runs`.
Steps now run only in Python (tasks/runner.py), so both go: every function of this schema whose
name starts with `volchain_` is dropped, whatever its signature (development versions of those
revisions had other signatures than the released ones). Flows in flight keep working: their step
records are on the flow row, which the one runner reads; a plan left on a row goes with the
column. On a database created after this change there is nothing to drop.

Deploy order: stop the workers of the earlier release first (they call these functions), then
run `volchain db upgrade`, then start the new release's workers (they need neither).

There is no way back: the functions' code is gone. Going back to a release before this one means
restoring a backup, so the downgrade does nothing.

Revision ID: 0006
Revises: 0005
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

RETIRED_FUNCTIONS = sa.text(
    "SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
    "WHERE n.nspname = current_schema() AND p.proname LIKE :pattern"
)


def upgrade() -> None:
    bind = op.get_bind()
    for (signature,) in bind.execute(RETIRED_FUNCTIONS, {"pattern": "volchain\\_%"}).all():
        op.execute(f"DROP FUNCTION IF EXISTS {signature}")
    op.execute("ALTER TABLE flow_runs DROP COLUMN IF EXISTS plans")


def downgrade() -> None:
    pass
