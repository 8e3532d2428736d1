"""Planned steps: extract_volume_request prepares the calls of the steps after it

With 0004 each of quota_reserve, entry_create and quota_commit cost two round trips: an
unlocked read of the flow row, so that Python could build the call, then the call. Every input
of those calls is known once extract_volume_request has built the request spec, so extract now
writes them on the flow row (`flow_runs.plans`, in the same statement as its record), and a
chain step sends one statement, `volchain_run_planned(flow, step, now, done_at)`: the function
reads the plan and makes the 0004 call with it, which locks and checks the flow row as before.

`plans` (jsonb on PostgreSQL: read by key; cleared when the flow succeeds or is compensated)
maps a step name to {"params": {...}, "provided": "<json text>"}: the call's inputs and the
result the step records, kept as text so that the record's keys keep the order Python wrote
them in, as on the other paths. quota_commit has no params: the reservations and resources it
commits are read from quota_reserve's record, so a reservation made by the Python engine
commits the same.

`volchain_run_planned` answers what the 0004 function answers, or `unplanned` (nothing done)
when the flow has no plan for the step (flows started before this migration, flows with
failures to inject, a quota engine configured for usage refreshes) or, for quota_commit, no
quota_reserve record: the caller takes the 0004 path.

Revision ID: 0005
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

FUNCTIONS = [
    # extract_volume_request: its record and the plans of the later steps, in one statement and
    # one UPDATE of the flow row (the record merged as volchain_write_record merges it).
    """
CREATE OR REPLACE FUNCTION volchain_record_step_and_plans(
    p_flow_id varchar, p_step text, p_record json, p_now timestamp, p_final boolean, p_plans jsonb
) RETURNS json LANGUAGE plpgsql AS $$
DECLARE
    claim json;
BEGIN
    claim := volchain_claim_step(p_flow_id, p_step);
    IF claim IS NOT NULL THEN
        RETURN claim;
    END IF;
    UPDATE flow_runs
    SET steps = (SELECT json_object_agg(e.key, e.value ORDER BY e.n)
                 FROM (SELECT key, value, n FROM json_each(steps) WITH ORDINALITY AS r(key, value, n)
                       UNION ALL SELECT p_step, p_record, 9223372036854775807) AS e),
        plans = p_plans,
        progress_at = p_now,
        state = CASE WHEN p_final THEN 'succeeded' ELSE state END,
        finished_at = CASE WHEN p_final THEN p_now ELSE finished_at END
    WHERE id = p_flow_id;
    RETURN json_build_object('status', 'done');
END $$
""",
    # The elements of a jsonb array as text, in their order (plpgsql: its plan is kept).
    """
CREATE OR REPLACE FUNCTION volchain_jsonb_texts(p_array jsonb) RETURNS text[]
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN ARRAY(SELECT e.value FROM jsonb_array_elements_text(p_array) WITH ORDINALITY AS e(value, n)
                 ORDER BY e.n);
END $$
""",
    # A planned step: its 0004 function, called with the plan's inputs. The row is read here
    # without a lock; the 0004 function locks it and checks state and records again. A plan and
    # the records of earlier steps never change while the flow is running.
    """
CREATE OR REPLACE FUNCTION volchain_run_planned(
    p_flow_id varchar, p_step text, p_now timestamp, p_done_at text
) RETURNS json LANGUAGE plpgsql AS $$
DECLARE
    f record;
    plan jsonb;
    params jsonb;
    provided json;
    reserve json;
    rec json;
BEGIN
    -- steps (json, re-parsed on every access) is read only by the step that needs it.
    SELECT project_id, plans -> p_step AS plan,
           CASE WHEN p_step = 'quota_commit' THEN steps -> 'quota_reserve' -> 'result' END AS reserve
    INTO f FROM flow_runs WHERE id = p_flow_id;
    IF NOT FOUND THEN
        RETURN json_build_object('status', 'missing');
    END IF;
    plan := f.plan;
    IF plan IS NULL OR jsonb_typeof(plan) <> 'object' OR jsonb_typeof(plan -> 'provided') <> 'string' THEN
        RETURN json_build_object('status', 'unplanned');
    END IF;
    params := plan -> 'params';
    provided := (plan ->> 'provided')::json;
    -- The record, as tasks/runner._record writes it (keys in this order).
    rec := json_build_object('state', 'done', 'result', provided, 'done_at', p_done_at, 'reverted_at', NULL);
    IF p_step = 'quota_reserve' THEN
        RETURN volchain_quota_reserve(
            p_flow_id, p_step, rec, p_now, f.project_id,
            volchain_jsonb_texts(params -> 'resources'),
            volchain_jsonb_texts(params -> 'deltas')::bigint[],
            volchain_jsonb_texts(params -> 'defaults')::bigint[],
            ARRAY(SELECT e.value FROM json_array_elements_text(provided -> 'reservations')
                  WITH ORDINALITY AS e(value, n) ORDER BY e.n),
            p_now + make_interval(secs => (params ->> 'expire_seconds')::double precision),
            (params ->> 'size')::bigint,
            (params ->> 'per_volume_default')::bigint);
    ELSIF p_step = 'entry_create' THEN
        RETURN volchain_entry_create(
            p_flow_id, p_step, rec, p_now,
            (params -> 'volume') || jsonb_build_object('created_at', p_now),
            volchain_jsonb_texts(params -> 'meta_keys'),
            volchain_jsonb_texts(params -> 'meta_values'));
    ELSIF p_step = 'quota_commit' THEN
        reserve := f.reserve;
        IF reserve IS NULL OR json_typeof(reserve) <> 'object' THEN
            RETURN json_build_object('status', 'unplanned');  -- nothing reserved: the full path decides
        END IF;
        RETURN volchain_quota_commit(
            p_flow_id, p_step, rec, p_now, f.project_id,
            ARRAY(SELECT json_object_keys(reserve -> 'deltas')),
            ARRAY(SELECT e.value FROM json_array_elements_text(reserve -> 'reservations')
                  WITH ORDINALITY AS e(value, n) ORDER BY e.n));
    END IF;
    RETURN json_build_object('status', 'unplanned');
END $$
""",
]

SIGNATURES = [
    "volchain_run_planned(varchar, text, timestamp, text)",
    "volchain_jsonb_texts(jsonb)",
    "volchain_record_step_and_plans(varchar, text, json, timestamp, boolean, jsonb)",
]


def upgrade() -> None:
    op.add_column("flow_runs", sa.Column("plans", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
                                         nullable=True))
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite (the embedded default) runs every step in Python
    for sql in FUNCTIONS:
        op.execute(sql)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for signature in SIGNATURES:
            op.execute(f"DROP FUNCTION IF EXISTS {signature}")
    with op.batch_alter_table("flow_runs") as batch:
        batch.drop_column("plans")
