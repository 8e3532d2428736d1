"""PostgreSQL functions that run a step's effect and its flow-log record in one statement

A chain step used to be BEGIN, lock the flow row, its effect (one to four statements), record,
COMMIT: up to eight round trips, each with its client and server cost. On PostgreSQL the steps
whose effect needs no Python in the middle now send one statement: a call to one of these
functions, which locks the flow row, checks it (state `running`, this step not yet recorded),
applies the effect and merges the step's record into `flow_runs.steps`, atomically. The Python
side reads the flow row (unlocked) beforehand to build the call, and keeps the full,
transactional path for everything these functions leave to it (`status: slow`) and for SQLite.

Every function returns a JSON object (json: keys in the order written) with `status`:
    done          the effect and the record are committed
    replayed      the step was recorded already (`record` holds it); nothing done
    not_running   the flow is compensating or finished (`state`); nothing done
    missing       no such flow
and, for the quota steps, an outcome the caller turns into Cinder's error (nothing done):
    per_volume    `limit` is below the size (VolumeSizeExceedsLimit)
    overflow      `resource` would pass INT_MAX (QuotaUsageOverflow)
    over          some limit is exceeded (`limits`, `usages`: the caller builds OverQuota)
    expired       a reservation to commit is no longer pending (ReservationExpired)
    slow          the Python path must do it: a usage row is missing or due a refresh
                  (reserve), or two reservations share a usage row (commit)

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
CREATE OR REPLACE FUNCTION volchain_claim_step(p_flow_id varchar, p_step text) RETURNS json
LANGUAGE plpgsql AS $$
DECLARE
    f record;
BEGIN
    SELECT state, steps -> p_step AS recorded INTO f FROM flow_runs WHERE id = p_flow_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN json_build_object('status', 'missing');
    END IF;
    IF f.recorded IS NOT NULL THEN
        RETURN json_build_object('status', 'replayed', 'record', f.recorded);
    END IF;
    IF f.state <> 'running' THEN
        RETURN json_build_object('status', 'not_running', 'state', f.state);
    END IF;
    RETURN NULL;
END $$
""",
    # Merge a step's record into the (claimed) flow row; the final step also ends the flow.
    """
CREATE OR REPLACE FUNCTION volchain_write_record(
    p_flow_id varchar, p_step text, p_record json, p_now timestamp, p_final boolean
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    -- json, not jsonb, all the way: the records keep their keys in the order the steps wrote
    -- them (a request's metadata is inserted and shown in the order it was given).
    -- plpgsql, not sql: its statement plans are kept for the session, an sql function's are not.
    UPDATE flow_runs
    SET steps = (SELECT json_object_agg(e.key, e.value ORDER BY e.n)
                 FROM (SELECT key, value, n FROM json_each(steps) WITH ORDINALITY AS r(key, value, n)
                       UNION ALL SELECT p_step, p_record, 9223372036854775807) AS e),
        progress_at = p_now,
        state = CASE WHEN p_final THEN 'succeeded' ELSE state END,
        finished_at = CASE WHEN p_final THEN p_now ELSE finished_at END
    WHERE id = p_flow_id;
END $$
""",
    # A step whose effect is only its record (extract_volume_request).
    """
CREATE OR REPLACE FUNCTION volchain_record_step(
    p_flow_id varchar, p_step text, p_record json, p_now timestamp, p_final boolean
) RETURNS json LANGUAGE plpgsql AS $$
DECLARE
    claim json;
BEGIN
    claim := volchain_claim_step(p_flow_id, p_step);
    IF claim IS NOT NULL THEN
        RETURN claim;
    END IF;
    PERFORM volchain_write_record(p_flow_id, p_step, p_record, p_now, p_final);
    RETURN json_build_object('status', 'done');
END $$
""",
    # entry_create: the volume row (every column given, as the Python path inserts it) and its
    # metadata, in the order given.
    """
CREATE OR REPLACE FUNCTION volchain_entry_create(
    p_flow_id varchar, p_step text, p_record json, p_now timestamp,
    p_volume jsonb, p_meta_keys text[], p_meta_values text[]
) RETURNS json LANGUAGE plpgsql AS $$
DECLARE
    claim json;
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
    RETURN json_build_object('status', 'done');
END $$
""",
    # quota_reserve: Cinder's limit_check(per_volume_gigabytes) and reserve, for usage rows that
    # exist and need no refresh (until_refresh unset, in_use not negative); otherwise `slow`.
    # p_defaults[i] is the configured default of p_resources[i], p_per_volume_default that of
    # per_volume_gigabytes (used when neither the project nor the default class has a row).
    """
CREATE OR REPLACE FUNCTION volchain_quota_reserve(
    p_flow_id varchar, p_step text, p_record json, p_now timestamp,
    p_project_id varchar, p_resources text[], p_deltas bigint[], p_defaults bigint[],
    p_uuids text[], p_expire timestamp, p_size bigint, p_per_volume_default bigint
) RETURNS json LANGUAGE plpgsql AS $$
DECLARE
    int_max constant bigint := 2147483647;
    n int := cardinality(p_resources);
    claim json;
    limits bigint[];  -- limits[1..n] for p_resources, limits[n + 1] for per_volume_gigabytes
    ids int[];
    in_use bigint[];
    reserved bigint[];
    u record;
    pos int;
    found_rows int := 0;
    over boolean := false;
BEGIN
    claim := volchain_claim_step(p_flow_id, p_step);
    IF claim IS NOT NULL THEN
        RETURN claim;
    END IF;

    -- Limits: the project's own row, else the default class's row, else the configured default.
    SELECT array_agg(coalesce(q.hard_limit, c.hard_limit, d.fallback) ORDER BY d.i) INTO limits
    FROM unnest(p_resources || 'per_volume_gigabytes'::text, p_defaults || p_per_volume_default)
         WITH ORDINALITY AS d(resource, fallback, i)
    LEFT JOIN quotas q ON q.project_id = p_project_id AND q.resource = d.resource
    LEFT JOIN quota_classes c ON c.class_name = 'default' AND c.resource = d.resource;
    IF 0 <= limits[n + 1] AND limits[n + 1] < p_size THEN
        RETURN json_build_object('status', 'per_volume', 'limit', limits[n + 1]);
    END IF;

    -- Lock and read the usage rows in one statement, in id order (what is read is what is locked).
    ids := array_fill(NULL::int, ARRAY[n]);
    in_use := array_fill(NULL::bigint, ARRAY[n]);
    reserved := array_fill(NULL::bigint, ARRAY[n]);
    FOR u IN
        SELECT q.id, q.resource, q.in_use AS used, q.reserved AS held, q.until_refresh FROM quota_usages AS q
        WHERE q.project_id = p_project_id AND q.resource = ANY(p_resources)
        ORDER BY q.id FOR UPDATE
    LOOP
        IF u.used < 0 OR u.until_refresh IS NOT NULL THEN
            RETURN json_build_object('status', 'slow');
        END IF;
        pos := array_position(p_resources, u.resource::text);
        ids[pos] := u.id;
        in_use[pos] := u.used;
        reserved[pos] := u.held;
        found_rows := found_rows + 1;
    END LOOP;
    IF found_rows < n THEN
        RETURN json_build_object('status', 'slow');
    END IF;

    -- Overflow, in delta order; then every limit.
    FOR i IN 1 .. n LOOP
        IF p_deltas[i] > 0 AND (in_use[i] + reserved[i] + p_deltas[i] > int_max
                                OR reserved[i] + p_deltas[i] > int_max) THEN
            RETURN json_build_object('status', 'overflow', 'resource', p_resources[i]);
        END IF;
    END LOOP;
    FOR i IN 1 .. n LOOP
        IF limits[i] >= 0 AND p_deltas[i] >= 0 AND limits[i] < p_deltas[i] + in_use[i] + reserved[i] THEN
            over := true;
        END IF;
    END LOOP;
    IF over THEN
        RETURN json_build_object(
            'status', 'over',
            'limits', (SELECT json_object_agg(p_resources[i], limits[i]) FROM generate_series(1, n) AS i),
            'usages', (SELECT json_object_agg(p_resources[i], json_build_object('in_use', in_use[i],
                                                                                'reserved', reserved[i]))
                       FROM generate_series(1, n) AS i));
    END IF;

    INSERT INTO reservations (uuid, usage_id, project_id, resource, delta, expire, created_at)
    SELECT r.uuid, r.usage_id, p_project_id, r.resource, r.delta, p_expire, p_now
    FROM unnest(p_uuids, ids, p_resources, p_deltas) WITH ORDINALITY AS r(uuid, usage_id, resource, delta, i)
    ORDER BY r.i;
    UPDATE quota_usages AS q
    SET reserved = q.reserved + greatest(d.delta, 0), updated_at = p_now
    FROM unnest(ids, p_deltas) AS d(id, delta)
    WHERE q.id = d.id;
    PERFORM volchain_write_record(p_flow_id, p_step, p_record, p_now, false);
    RETURN json_build_object('status', 'done');
END $$
""",
    # quota_commit: move every reservation of the flow into in_use, or nothing if any of them is
    # no longer pending (`expired`).
    """
CREATE OR REPLACE FUNCTION volchain_quota_commit(
    p_flow_id varchar, p_step text, p_record json, p_now timestamp,
    p_project_id varchar, p_resources text[], p_uuids text[]
) RETURNS json LANGUAGE plpgsql AS $$
DECLARE
    claim json;
    pending int;
    usages int;
BEGIN
    claim := volchain_claim_step(p_flow_id, p_step);
    IF claim IS NOT NULL THEN
        RETURN claim;
    END IF;
    PERFORM 1 FROM quota_usages
    WHERE project_id = p_project_id AND resource = ANY(p_resources) ORDER BY id FOR UPDATE;
    SELECT count(*), count(DISTINCT usage_id) INTO pending, usages
    FROM (SELECT usage_id FROM reservations WHERE uuid = ANY(p_uuids) FOR UPDATE) locked;
    IF pending <> cardinality(p_uuids) THEN
        RETURN json_build_object('status', 'expired', 'pending', pending);
    END IF;
    IF usages <> pending THEN
        RETURN json_build_object('status', 'slow');  -- two reservations on one usage row: Python settles them in order
    END IF;
    -- One reservation per usage row: a positive delta moves from reserved to in_use, a negative
    -- one lowers in_use (never below 0), as the Python engine settles them.
    UPDATE quota_usages AS q
    SET reserved = CASE WHEN r.delta >= 0 THEN q.reserved - least(r.delta, q.reserved) ELSE q.reserved END,
        in_use = CASE WHEN r.delta >= 0 THEN q.in_use + r.delta ELSE q.in_use + greatest(r.delta, -q.in_use) END,
        updated_at = p_now
    FROM reservations r
    WHERE r.uuid = ANY(p_uuids) AND q.id = r.usage_id;
    DELETE FROM reservations WHERE uuid = ANY(p_uuids);
    PERFORM volchain_write_record(p_flow_id, p_step, p_record, p_now, false);
    RETURN json_build_object('status', 'done');
END $$
""",
]

SIGNATURES = [
    "volchain_quota_commit(varchar, text, json, timestamp, varchar, text[], text[])",
    "volchain_quota_reserve(varchar, text, json, timestamp, varchar, text[], bigint[], bigint[], text[], "
    "timestamp, bigint, bigint)",
    "volchain_entry_create(varchar, text, json, timestamp, jsonb, text[], text[])",
    "volchain_record_step(varchar, text, json, timestamp, boolean)",
    "volchain_write_record(varchar, text, json, timestamp, boolean)",
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
