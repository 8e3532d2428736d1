"""The volume lifecycle: user messages, per-project default types, snapshot fields, service reports

Adds `messages` (Cinder's user messages), `default_volume_types` (3.62), `snapshot_metadata`;
snapshots get a description, progress, provider location and timestamps; services get their
heartbeat count, disabled reason and the capabilities their driver reports; images may name a
file with their data; volumes get an index on (host, deleted) for a backend's allocated capacity.
Only additions: the previous release keeps working on the upgraded schema.

Revision ID: 0007
Revises: 0006
"""
from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('messages',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('project_id', sa.String(length=255), nullable=False),
    sa.Column('request_id', sa.String(length=255), nullable=True),
    sa.Column('resource_type', sa.String(length=36), nullable=True),
    sa.Column('resource_uuid', sa.String(length=36), nullable=True),
    sa.Column('event_id', sa.String(length=255), nullable=False),
    sa.Column('message_level', sa.String(length=255), nullable=False),
    sa.Column('action_id', sa.String(length=10), nullable=True),
    sa.Column('detail_id', sa.String(length=10), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('expires_at', sa.DateTime(), nullable=True),
    sa.Column('deleted', sa.Boolean(), nullable=False),
    sa.Column('deleted_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_messages'))
    )
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.create_index('ix_messages_project_live', ['project_id', 'deleted'], unique=False)
        batch_op.create_index(batch_op.f('ix_messages_resource_uuid'), ['resource_uuid'], unique=False)

    op.create_table('default_volume_types',
    sa.Column('project_id', sa.String(length=255), nullable=False),
    sa.Column('volume_type_id', sa.String(length=36), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['volume_type_id'], ['volume_types.id'], name=op.f('fk_default_volume_types_volume_type_id_volume_types')),
    sa.PrimaryKeyConstraint('project_id', name=op.f('pk_default_volume_types'))
    )
    with op.batch_alter_table('default_volume_types', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_default_volume_types_volume_type_id'), ['volume_type_id'], unique=False)

    op.create_table('snapshot_metadata',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('snapshot_id', sa.String(length=36), nullable=False),
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('value', sa.String(length=255), nullable=False),
    sa.ForeignKeyConstraint(['snapshot_id'], ['snapshots.id'], name=op.f('fk_snapshot_metadata_snapshot_id_snapshots')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_snapshot_metadata')),
    sa.UniqueConstraint('snapshot_id', 'key', name=op.f('uq_snapshot_metadata_snapshot_id_key'))
    )
    with op.batch_alter_table('snapshot_metadata', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_snapshot_metadata_snapshot_id'), ['snapshot_id'], unique=False)

    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.add_column(sa.Column('location', sa.String(length=1024), nullable=True))

    with op.batch_alter_table('services', schema=None) as batch_op:
        batch_op.add_column(sa.Column('disabled_reason', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('report_count', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('capabilities', sa.JSON(), nullable=True))

    with op.batch_alter_table('snapshots', schema=None) as batch_op:
        batch_op.add_column(sa.Column('display_description', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('progress', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('provider_location', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('deleted_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('updated_at', sa.DateTime(), nullable=True))
        batch_op.create_index('ix_snapshots_volume_live', ['volume_id', 'deleted'], unique=False)

    with op.batch_alter_table('volumes', schema=None) as batch_op:
        batch_op.create_index('ix_volumes_host_live', ['host', 'deleted'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('volumes', schema=None) as batch_op:
        batch_op.drop_index('ix_volumes_host_live')

    with op.batch_alter_table('snapshots', schema=None) as batch_op:
        batch_op.drop_index('ix_snapshots_volume_live')
        batch_op.drop_column('updated_at')
        batch_op.drop_column('deleted_at')
        batch_op.drop_column('provider_location')
        batch_op.drop_column('progress')
        batch_op.drop_column('display_description')

    with op.batch_alter_table('services', schema=None) as batch_op:
        batch_op.drop_column('capabilities')
        batch_op.drop_column('report_count')
        batch_op.drop_column('disabled_reason')

    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.drop_column('location')

    with op.batch_alter_table('snapshot_metadata', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_snapshot_metadata_snapshot_id'))

    op.drop_table('snapshot_metadata')
    with op.batch_alter_table('default_volume_types', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_default_volume_types_volume_type_id'))

    op.drop_table('default_volume_types')
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_messages_resource_uuid'))
        batch_op.drop_index('ix_messages_project_live')

    op.drop_table('messages')
