"""An index of the volumes still `creating`

`ix_volumes_creating`, a partial index on `volumes.created_at` where the status is `creating`:
the sweeper looks there for volumes whose create message the broker lost (tasks/redrive.py),
without reading every volume. Only an addition: the previous release works on the upgraded schema.

Revision ID: 0009
Revises: 0008
"""
from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_volumes_creating', 'volumes', ['created_at'], unique=False,
                    postgresql_where=sa.text("status = 'creating'"))


def downgrade() -> None:
    op.drop_index('ix_volumes_creating', table_name='volumes', postgresql_where=sa.text("status = 'creating'"))
