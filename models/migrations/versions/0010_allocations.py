"""Allocated capacity per backend, kept as a counter

`allocations`: one row per volume `host` string (`host@backend#pool`) with the GB of its live
volumes and of their live snapshots, filled here from the rows; from now on changed in the
transaction that changes what a backend holds (tasks/allocation.py). The scheduler reads it
instead of adding up every volume on the backend. Only an addition: the previous release keeps
working on the upgraded schema (it does not keep the counter; run the reconciler after a
rollback and upgrade again: `volchain quota check --sync` recounts it).

Revision ID: 0010
Revises: 0009
"""
from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('allocations',
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('allocated_gb', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('host', name=op.f('pk_allocations'))
    )
    op.execute(
        "INSERT INTO allocations (host, allocated_gb) "
        "SELECT host, sum(gb) FROM ("
        " SELECT host, size AS gb FROM volumes WHERE host IS NOT NULL AND NOT deleted"
        " UNION ALL"
        " SELECT v.host, s.volume_size FROM snapshots s JOIN volumes v ON v.id = s.volume_id"
        " WHERE v.host IS NOT NULL AND NOT s.deleted"
        ") AS held GROUP BY host")


def downgrade() -> None:
    op.drop_table('allocations')
