"""auth_keys: the token-signing secret, generated at upgrade time

Revision ID: 0002
Revises: 0001
"""
import secrets
from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    keys = op.create_table(
        "auth_keys",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("secret", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_keys")),
    )
    op.bulk_insert(keys, [{"secret": secrets.token_hex(32),
                           "created_at": datetime.now(timezone.utc).replace(tzinfo=None)}])


def downgrade() -> None:
    op.drop_table("auth_keys")
