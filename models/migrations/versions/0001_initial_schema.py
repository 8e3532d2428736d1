"""initial schema, the default volume type and Cinder's default quota class

Revision ID: 0001
Revises: 
Create Date: 2026-11-25 08:38:21.194872
"""
from datetime import datetime, timezone

from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('encryption_keys',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('algorithm', sa.String(length=64), nullable=False),
    sa.Column('length', sa.Integer(), nullable=True),
    sa.Column('secret', sa.String(length=512), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_encryption_keys'))
    )
    op.create_table('flow_runs',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('kind', sa.String(length=64), nullable=False),
    sa.Column('volume_id', sa.String(length=36), nullable=False),
    sa.Column('project_id', sa.String(length=255), nullable=False),
    sa.Column('user_id', sa.String(length=255), nullable=True),
    sa.Column('idempotency_key', sa.String(length=255), nullable=True),
    sa.Column('state', sa.String(length=32), nullable=False),
    sa.Column('request', sa.JSON(), nullable=False),
    sa.Column('caller', sa.JSON(), nullable=True),
    sa.Column('steps', sa.JSON(), nullable=False),
    sa.Column('error', sa.JSON(), nullable=True),
    sa.Column('failed_step', sa.String(length=64), nullable=True),
    sa.Column('root_task_id', sa.String(length=36), nullable=True),
    sa.Column('compensation_attempts', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('progress_at', sa.DateTime(), nullable=False),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_flow_runs')),
    sa.UniqueConstraint('project_id', 'idempotency_key', name=op.f('uq_flow_runs_project_id_idempotency_key'))
    )
    with op.batch_alter_table('flow_runs', schema=None) as batch_op:
        batch_op.create_index('ix_flow_runs_state_progress', ['state', 'progress_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_flow_runs_volume_id'), ['volume_id'], unique=False)

    op.create_table('images',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=True),
    sa.Column('owner', sa.String(length=255), nullable=True),
    sa.Column('visibility', sa.String(length=32), nullable=False),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=True),
    sa.Column('virtual_size', sa.BigInteger(), nullable=True),
    sa.Column('min_disk', sa.Integer(), nullable=False),
    sa.Column('properties', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_images'))
    )
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_images_name'), ['name'], unique=False)

    op.create_table('qos_specs',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('consumer', sa.String(length=32), nullable=False),
    sa.Column('specs', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_qos_specs')),
    sa.UniqueConstraint('name', name=op.f('uq_qos_specs_name'))
    )
    op.create_table('quota_classes',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('class_name', sa.String(length=255), nullable=False),
    sa.Column('resource', sa.String(length=300), nullable=False),
    sa.Column('hard_limit', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_quota_classes')),
    sa.UniqueConstraint('class_name', 'resource', name=op.f('uq_quota_classes_class_name_resource'))
    )
    op.create_table('quota_usages',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('project_id', sa.String(length=255), nullable=False),
    sa.Column('resource', sa.String(length=300), nullable=False),
    sa.Column('in_use', sa.BigInteger(), nullable=False),
    sa.Column('reserved', sa.BigInteger(), nullable=False),
    sa.Column('until_refresh', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_quota_usages')),
    sa.UniqueConstraint('project_id', 'resource', name=op.f('uq_quota_usages_project_id_resource'))
    )
    op.create_table('quotas',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('project_id', sa.String(length=255), nullable=False),
    sa.Column('resource', sa.String(length=300), nullable=False),
    sa.Column('hard_limit', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_quotas')),
    sa.UniqueConstraint('project_id', 'resource', name=op.f('uq_quotas_project_id_resource'))
    )
    op.create_table('services',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('binary', sa.String(length=255), nullable=False),
    sa.Column('availability_zone', sa.String(length=255), nullable=False),
    sa.Column('disabled', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_services')),
    sa.UniqueConstraint('host', 'binary', name=op.f('uq_services_host_binary'))
    )
    op.create_table('volumes',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('project_id', sa.String(length=255), nullable=False),
    sa.Column('user_id', sa.String(length=255), nullable=True),
    sa.Column('display_name', sa.String(length=255), nullable=True),
    sa.Column('display_description', sa.String(length=255), nullable=True),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=255), nullable=False),
    sa.Column('attach_status', sa.String(length=255), nullable=False),
    sa.Column('availability_zone', sa.String(length=255), nullable=True),
    sa.Column('volume_type_id', sa.String(length=36), nullable=False),
    sa.Column('snapshot_id', sa.String(length=36), nullable=True),
    sa.Column('source_volid', sa.String(length=36), nullable=True),
    sa.Column('image_id', sa.String(length=36), nullable=True),
    sa.Column('encryption_key_id', sa.String(length=36), nullable=True),
    sa.Column('multiattach', sa.Boolean(), nullable=False),
    sa.Column('bootable', sa.Boolean(), nullable=False),
    sa.Column('use_quota', sa.Boolean(), nullable=False),
    sa.Column('shared_targets', sa.Boolean(), nullable=False),
    sa.Column('replication_status', sa.String(length=255), nullable=True),
    sa.Column('host', sa.String(length=255), nullable=True),
    sa.Column('cluster_name', sa.String(length=255), nullable=True),
    sa.Column('provider_location', sa.String(length=255), nullable=True),
    sa.Column('scheduled_at', sa.DateTime(), nullable=True),
    sa.Column('error_message', sa.String(length=255), nullable=True),
    sa.Column('deleted', sa.Boolean(), nullable=False),
    sa.Column('deleted_at', sa.DateTime(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_volumes'))
    )
    with op.batch_alter_table('volumes', schema=None) as batch_op:
        batch_op.create_index('ix_volumes_project_live', ['project_id', 'deleted'], unique=False)

    op.create_table('reservations',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('uuid', sa.String(length=36), nullable=False),
    sa.Column('usage_id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.String(length=255), nullable=False),
    sa.Column('resource', sa.String(length=300), nullable=False),
    sa.Column('delta', sa.BigInteger(), nullable=False),
    sa.Column('expire', sa.DateTime(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['usage_id'], ['quota_usages.id'], name=op.f('fk_reservations_usage_id_quota_usages')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_reservations')),
    sa.UniqueConstraint('uuid', name=op.f('uq_reservations_uuid'))
    )
    with op.batch_alter_table('reservations', schema=None) as batch_op:
        batch_op.create_index('ix_reservations_expire', ['expire'], unique=False)

    op.create_table('snapshots',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('project_id', sa.String(length=255), nullable=False),
    sa.Column('user_id', sa.String(length=255), nullable=True),
    sa.Column('volume_id', sa.String(length=36), nullable=False),
    sa.Column('volume_size', sa.Integer(), nullable=False),
    sa.Column('volume_type_id', sa.String(length=36), nullable=True),
    sa.Column('encryption_key_id', sa.String(length=36), nullable=True),
    sa.Column('status', sa.String(length=255), nullable=False),
    sa.Column('display_name', sa.String(length=255), nullable=True),
    sa.Column('use_quota', sa.Boolean(), nullable=False),
    sa.Column('deleted', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['volume_id'], ['volumes.id'], name=op.f('fk_snapshots_volume_id_volumes')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_snapshots'))
    )
    with op.batch_alter_table('snapshots', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_snapshots_project_id'), ['project_id'], unique=False)

    op.create_table('volume_metadata',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('volume_id', sa.String(length=36), nullable=False),
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('value', sa.String(length=255), nullable=False),
    sa.ForeignKeyConstraint(['volume_id'], ['volumes.id'], name=op.f('fk_volume_metadata_volume_id_volumes')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_volume_metadata')),
    sa.UniqueConstraint('volume_id', 'key', name=op.f('uq_volume_metadata_volume_id_key'))
    )
    with op.batch_alter_table('volume_metadata', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_volume_metadata_volume_id'), ['volume_id'], unique=False)

    op.create_table('volume_types',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('description', sa.String(length=255), nullable=True),
    sa.Column('is_public', sa.Boolean(), nullable=False),
    sa.Column('qos_specs_id', sa.String(length=36), nullable=True),
    sa.Column('deleted', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['qos_specs_id'], ['qos_specs.id'], name=op.f('fk_volume_types_qos_specs_id_qos_specs')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_volume_types'))
    )
    with op.batch_alter_table('volume_types', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_volume_types_name'), ['name'], unique=False)

    op.create_table('encryption',
    sa.Column('volume_type_id', sa.String(length=36), nullable=False),
    sa.Column('provider', sa.String(length=255), nullable=False),
    sa.Column('cipher', sa.String(length=255), nullable=True),
    sa.Column('key_size', sa.Integer(), nullable=True),
    sa.Column('control_location', sa.String(length=255), nullable=False),
    sa.ForeignKeyConstraint(['volume_type_id'], ['volume_types.id'], name=op.f('fk_encryption_volume_type_id_volume_types')),
    sa.PrimaryKeyConstraint('volume_type_id', name=op.f('pk_encryption'))
    )
    op.create_table('volume_type_extra_specs',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('volume_type_id', sa.String(length=36), nullable=False),
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('value', sa.String(length=255), nullable=False),
    sa.ForeignKeyConstraint(['volume_type_id'], ['volume_types.id'], name=op.f('fk_volume_type_extra_specs_volume_type_id_volume_types')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_volume_type_extra_specs')),
    sa.UniqueConstraint('volume_type_id', 'key', name=op.f('uq_volume_type_extra_specs_volume_type_id_key'))
    )
    with op.batch_alter_table('volume_type_extra_specs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_volume_type_extra_specs_volume_type_id'), ['volume_type_id'], unique=False)

    op.create_table('volume_type_projects',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('volume_type_id', sa.String(length=36), nullable=False),
    sa.Column('project_id', sa.String(length=255), nullable=False),
    sa.ForeignKeyConstraint(['volume_type_id'], ['volume_types.id'], name=op.f('fk_volume_type_projects_volume_type_id_volume_types')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_volume_type_projects')),
    sa.UniqueConstraint('volume_type_id', 'project_id', name=op.f('uq_volume_type_projects_volume_type_id_project_id'))
    )
    _seed()


def downgrade() -> None:
    op.drop_table('volume_type_projects')
    with op.batch_alter_table('volume_type_extra_specs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_volume_type_extra_specs_volume_type_id'))

    op.drop_table('volume_type_extra_specs')
    op.drop_table('encryption')
    with op.batch_alter_table('volume_types', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_volume_types_name'))

    op.drop_table('volume_types')
    with op.batch_alter_table('volume_metadata', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_volume_metadata_volume_id'))

    op.drop_table('volume_metadata')
    with op.batch_alter_table('snapshots', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_snapshots_project_id'))

    op.drop_table('snapshots')
    with op.batch_alter_table('reservations', schema=None) as batch_op:
        batch_op.drop_index('ix_reservations_expire')

    op.drop_table('reservations')
    with op.batch_alter_table('volumes', schema=None) as batch_op:
        batch_op.drop_index('ix_volumes_project_live')

    op.drop_table('volumes')
    op.drop_table('services')
    op.drop_table('quotas')
    op.drop_table('quota_usages')
    op.drop_table('quota_classes')
    op.drop_table('qos_specs')
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_images_name'))

    op.drop_table('images')
    with op.batch_alter_table('flow_runs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_flow_runs_volume_id'))
        batch_op.drop_index('ix_flow_runs_state_progress')

    op.drop_table('flow_runs')
    op.drop_table('encryption_keys')


# Cinder's `default` quota class as its database init seeds it (backups added by a later Cinder migration).
DEFAULT_QUOTA_CLASS = {
    "volumes": 10,
    "snapshots": 10,
    "gigabytes": 1000,
    "per_volume_gigabytes": -1,
    "groups": 10,
    "backups": 10,
    "backup_gigabytes": 1000,
}
DEFAULT_TYPE_ID = "0ce21ce9-59f8-40b7-bd0a-9b39b09f4d4e"


def _seed() -> None:
    types = sa.table("volume_types", sa.column("id"), sa.column("name"), sa.column("description"),
                     sa.column("is_public"), sa.column("deleted"), sa.column("created_at"))
    op.bulk_insert(types, [{"id": DEFAULT_TYPE_ID, "name": "__DEFAULT__", "description": "Default Volume Type",
                            "is_public": True, "deleted": False, "created_at": datetime.now(timezone.utc).replace(tzinfo=None)}])
    classes = sa.table("quota_classes", sa.column("class_name"), sa.column("resource"), sa.column("hard_limit"))
    op.bulk_insert(classes, [{"class_name": "default", "resource": r, "hard_limit": v}
                             for r, v in DEFAULT_QUOTA_CLASS.items()])
