"""PostgreSQL functions that run a step's effect and its flow-log record in one statement

A chain step used to be BEGIN, lock the flow row, its effect (one to four statements), record,
COMMIT: up to eight round trips, each with its client and server cost. On PostgreSQL the steps
whose effect needs no Python in the middle now send one statement: a call to one of these
functions, which locks the flow row, checks it (state `running`, this step not yet recorded),
applies the effect and merges the step's record into `flow_runs.steps`, atomically. The Python
side reads the flow row (unlocked) beforehand to build the call, and keeps the full,
transactional path for everything these functions leave to it (`status: slow`) and for SQLite.

Every function returns a JSON object with `status`:
    done          the effect and the record are committed
    replayed      the step was recorded already (`record` holds it); nothing done
    not_running   the flow is compensating or finished (`state`); nothing done
    missing       no such flow
and, for the quota steps, an outcome the caller turns into Cinder's error (nothing done):
    per_volume    `limit` is below the size (VolumeSizeExceedsLimit)
    overflow      `resource` would pass INT_MAX (QuotaUsageOverflow)
    over          some limit is exceeded (`limits`, `usages`: the caller builds OverQuota)
    expired       a reservation to commit is no longer pending (ReservationExpired)
    slow          a usage row is missing or due a refresh: run the Python path instead

Lock order is the engine's: flow row, then usage rows by id, then reservations.

Revision ID: 0004
Revises: 0003
"""
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

FUNCTIONS = [
    # Lock the flow row; NULL when the step may run, else the status that says why not.
    """
CREATE OR REPLACE FUNCTION volchain_claim_step(p_flow_id varchar, p_step text) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    f record;
BEGIN
    SELECT state, steps::jsonb AS steps INTO f FROM flow_runs WHERE id = p_flow_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('status', 'missing');
    END IF;
    IF f.steps ? p_step THEN
        RETURN jsonb_build_object('status', 'replayed', 'record', f.steps -> p_step);
    END IF;
    IF f.state <> 'running' THEN
        RETURN jsonb_build_object('status', 'not_running', 'state', f.state);
    END IF;
    RETURN NULL;
END $$
""",
    # Merge a step's record into the (claimed) flow row; the final step also ends the flow.
    """
CREATE OR REPLACE FUNCTION volchain_write_record(
    p_flow_id varchar, p_step text, p_record jsonb, p_now timestamp, p_final boolean
) RETURNS void LANGUAGE sql AS $$
    UPDATE flow_runs
    SET steps = (steps::jsonb || jsonb_build_object(p_step, p_record))::json,
        progress_at = p_now,
        state = CASE WHEN p_final THEN 'succeeded' ELSE state END,
        finished_at = CASE WHEN p_final THEN p_now ELSE finished_at END
    WHERE id = p_flow_id
$$
""",
    # A step whose effect is only its record (extract_volume_request).
    """
CREATE OR REPLACE FUNCTION volchain_record_step(
    p_flow_id varchar, p_step text, p_record jsonb, p_now timestamp, p_final boolean
) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    claim jsonb;
BEGIN
    claim := volchain_claim_step(p_flow_id, p_step);
    IF claim IS NOT NULL THEN
        RETURN claim;
    END IF;
    PERFORM volchain_write_record(p_flow_id, p_step, p_record, p_now, p_final);
    RETURN jsonb_build_object('status', 'done');
END $$
""",
    # entry_create: the volume row (every column given, as the Python path inserts it) and its
    # metadata, in the order given.
    """
CREATE OR REPLACE FUNCTION volchain_entry_create(
    p_flow_id varchar, p_step text, p_record jsonb, p_now timestamp,
    p_volume jsonb, p_meta_keys text[], p_meta_values text[]
) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    claim jsonb;
BEGIN
    claim := volchain_claim_step(p_flow_id, p_step);
    IF claim IS NOT NULL THEN
        RETURN claim;
    END IF;
    INSERT INTO volumes SELECT * FROM jsonb_populate_record(NULL::volumes, p_volume);
    INSERT INTO volume_metadata (volume_id, key, value)
    SELECT p_volume ->> 'id', m.key, m.value
    FROM unnest(p_meta_keys, p_meta_values) WITH ORDINALITY AS m(key, value, n)
    ORDER BY m.n;
    PERFORM volchain_write_record(p_flow_id, p_step, p_record, p_now, false);
    RETURN jsonb_build_object('status', 'done');
END $$
""",
    # quota_reserve: Cinder's limit_check(per_volume_gigabytes) and reserve, for usage rows that
    # exist and need no refresh (until_refresh unset, in_use not negative); otherwise `slow`.
    # p_defaults[i] is the configured default of p_resources[i], p_per_volume_default that of
    # per_volume_gigabytes (used when neither the project nor the default class has a row).
    """
CREATE OR REPLACE FUNCTION volchain_quota_reserve(
    p_flow_id varchar, p_step text, p_record jsonb, p_now timestamp,
    p_project_id varchar, p_resources text[], p_deltas bigint[], p_defaults bigint[],
    p_uuids text[], p_expire timestamp, p_size bigint, p_per_volume_default bigint
) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    int_max constant bigint := 2147483647;
    n int := cardinality(p_resources);
    claim jsonb;
    found_limits jsonb;
    limits jsonb := '{}';
    usages jsonb := '{}';
    per_volume bigint;
    lim bigint;
    u record;
    over boolean := false;
BEGIN
    claim := volchain_claim_step(p_flow_id, p_step);
    IF claim IS NOT NULL THEN
        RETURN claim;
    END IF;

    -- Limits: the project's own row, else the default class's row, else the configured default.
    SELECT coalesce(jsonb_object_agg(resource, hard_limit), '{}') INTO found_limits FROM (
        SELECT DISTINCT ON (resource) resource, hard_limit FROM (
            SELECT resource, hard_limit, 0 AS rank FROM quotas
            WHERE project_id = p_project_id AND resource = ANY(p_resources || 'per_volume_gigabytes'::text)
            UNION ALL
            SELECT resource, hard_limit, 1 FROM quota_classes
            WHERE class_name = 'default' AND resource = ANY(p_resources || 'per_volume_gigabytes'::text)
        ) ranked ORDER BY resource, rank
    ) chosen;
    per_volume := coalesce((found_limits ->> 'per_volume_gigabytes')::bigint, p_per_volume_default);
    IF 0 <= per_volume AND per_volume < p_size THEN
        RETURN jsonb_build_object('status', 'per_volume', 'limit', per_volume);
    END IF;
    FOR i IN 1 .. n LOOP
        limits := limits || jsonb_build_object(
            p_resources[i], coalesce((found_limits ->> p_resources[i])::bigint, p_defaults[i]));
    END LOOP;

    -- The usage rows, locked in id order.
    FOR u IN
        SELECT id, resource, in_use, reserved, until_refresh FROM quota_usages
        WHERE project_id = p_project_id AND resource = ANY(p_resources)
        ORDER BY id FOR UPDATE
    LOOP
        IF u.in_use < 0 OR u.until_refresh IS NOT NULL THEN
            RETURN jsonb_build_object('status', 'slow');
        END IF;
        usages := usages || jsonb_build_object(
            u.resource, jsonb_build_object('id', u.id, 'in_use', u.in_use, 'reserved', u.reserved));
    END LOOP;
    FOR i IN 1 .. n LOOP
        IF NOT usages ? p_resources[i] THEN
            RETURN jsonb_build_object('status', 'slow');
        END IF;
    END LOOP;

    -- Overflow, in delta order; then every limit.
    FOR i IN 1 .. n LOOP
        IF p_deltas[i] > 0 AND (
            (usages -> p_resources[i] ->> 'in_use')::bigint + (usages -> p_resources[i] ->> 'reserved')::bigint
                + p_deltas[i] > int_max
            OR (usages -> p_resources[i] ->> 'reserved')::bigint + p_deltas[i] > int_max
        ) THEN
            RETURN jsonb_build_object('status', 'overflow', 'resource', p_resources[i]);
        END IF;
    END LOOP;
    FOR i IN 1 .. n LOOP
        lim := (limits ->> p_resources[i])::bigint;
        IF lim >= 0 AND p_deltas[i] >= 0 AND lim < p_deltas[i]
            + (usages -> p_resources[i] ->> 'in_use')::bigint + (usages -> p_resources[i] ->> 'reserved')::bigint
        THEN
            over := true;
        END IF;
    END LOOP;
    IF over THEN
        RETURN jsonb_build_object('status', 'over', 'limits', limits, 'usages', usages);
    END IF;

    INSERT INTO reservations (uuid, usage_id, project_id, resource, delta, expire, created_at)
    SELECT p_uuids[i], (usages -> p_resources[i] ->> 'id')::int, p_project_id, p_resources[i], p_deltas[i],
           p_expire, p_now
    FROM generate_subscripts(p_resources, 1) AS i ORDER BY i;
    UPDATE quota_usages AS q
    SET reserved = q.reserved + greatest(d.delta, 0), updated_at = p_now
    FROM unnest(p_resources, p_deltas) AS d(resource, delta)
    WHERE q.project_id = p_project_id AND q.resource = d.resource;
    PERFORM volchain_write_record(p_flow_id, p_step, p_record, p_now, false);
    RETURN jsonb_build_object('status', 'done');
END $$
""",
    # quota_commit: move every reservation of the flow into in_use, or nothing if any of them is
    # no longer pending (`expired`).
    """
CREATE OR REPLACE FUNCTION volchain_quota_commit(
    p_flow_id varchar, p_step text, p_record jsonb, p_now timestamp,
    p_project_id varchar, p_resources text[], p_uuids text[]
) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    claim jsonb;
    usage_ids int[];
    deltas bigint[];
BEGIN
    claim := volchain_claim_step(p_flow_id, p_step);
    IF claim IS NOT NULL THEN
        RETURN claim;
    END IF;
    PERFORM 1 FROM quota_usages
    WHERE project_id = p_project_id AND resource = ANY(p_resources)
    ORDER BY id FOR UPDATE;
    SELECT coalesce(array_agg(usage_id ORDER BY id), '{}'), coalesce(array_agg(delta ORDER BY id), '{}')
    INTO usage_ids, deltas
    FROM (SELECT id, usage_id, delta FROM reservations WHERE uuid = ANY(p_uuids) ORDER BY id FOR UPDATE) pending;
    IF cardinality(usage_ids) <> cardinality(p_uuids) THEN
        RETURN jsonb_build_object('status', 'expired', 'pending', cardinality(usage_ids));
    END IF;
    FOR i IN 1 .. cardinality(usage_ids) LOOP
        IF deltas[i] >= 0 THEN
            UPDATE quota_usages
            SET reserved = reserved - least(deltas[i], reserved), in_use = in_use + deltas[i], updated_at = p_now
            WHERE id = usage_ids[i];
        ELSE
            UPDATE quota_usages SET in_use = in_use + greatest(deltas[i], -in_use), updated_at = p_now
            WHERE id = usage_ids[i];
        END IF;
    END LOOP;
    DELETE FROM reservations WHERE uuid = ANY(p_uuids);
    PERFORM volchain_write_record(p_flow_id, p_step, p_record, p_now, false);
    RETURN jsonb_build_object('status', 'done');
END $$
""",
]

SIGNATURES = [
    "volchain_quota_commit(varchar, text, jsonb, timestamp, varchar, text[], text[])",
    "volchain_quota_reserve(varchar, text, jsonb, timestamp, varchar, text[], bigint[], bigint[], text[], "
    "timestamp, bigint, bigint)",
    "volchain_entry_create(varchar, text, jsonb, timestamp, jsonb, text[], text[])",
    "volchain_record_step(varchar, text, jsonb, timestamp, boolean)",
    "volchain_write_record(varchar, text, jsonb, timestamp, boolean)",
    "volchain_claim_step(varchar, text)",
]


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite (the embedded default) runs every step in Python
    for sql in FUNCTIONS:
        op.execute(sql)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for signature in SIGNATURES:
        op.execute(f"DROP FUNCTION IF EXISTS {signature}")
