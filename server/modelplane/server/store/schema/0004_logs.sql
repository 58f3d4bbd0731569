-- Log collection: typed events in daily partitions, per-client ingestion counters, the tail feed.

-- One row per event. Partitioned by day on event_time so that retention drops whole partitions and a
-- time range reads only the days it covers. The primary key includes event_time because a unique key
-- of a partitioned table must include the partition key; a resent event carries the same time, so
-- (event_time, event_id) recognises it, and its order serves time-ordered scans too.
-- Enums are stored as the lower-case proto name without its prefix; '' means unset.
CREATE TABLE log_events (
    event_time timestamptz NOT NULL,
    event_id text COLLATE "C" NOT NULL,
    service text NOT NULL,
    instance text NOT NULL DEFAULT '',
    level text NOT NULL,                       -- debug, info, warning, error, fatal
    kind text NOT NULL,                        -- message, inference, routing, guardrail, control_plane_change
    message text NOT NULL DEFAULT '',
    model_version text NOT NULL DEFAULT '',
    deployment text NOT NULL DEFAULT '',
    traffic_slot text NOT NULL DEFAULT '',     -- '', stable, canary
    policy text NOT NULL DEFAULT '',
    policy_revision bigint NOT NULL DEFAULT 0,
    trace_id text NOT NULL DEFAULT '',
    request_id text NOT NULL DEFAULT '',
    attributes jsonb NOT NULL DEFAULT '{}',
    -- The payload's fields, flattened; NULL where the kind has no such field.
    provider text,
    input_tokens bigint,
    output_tokens bigint,
    cached_input_tokens bigint,
    reasoning_tokens bigint,
    latency_us bigint,                         -- inference or routing latency, microseconds
    cost_micros bigint,
    cost_currency text,
    cost_from_registry boolean,
    status text,                               -- inference status or routing outcome
    rollout text,
    endpoint text,
    decision text,                             -- guardrail decision: allow, redact, block
    violation_count bigint,
    highest_severity text,
    change_resource text,
    change_action text,
    change_actor text,
    change_revision bigint,
    -- Decided once at ingestion (see LogGroup.error_count), so aggregates only sum it.
    is_error boolean NOT NULL,
    ingest_time timestamptz NOT NULL DEFAULT now(),
    -- The ingestion transaction that stored the row; TailLogEvents reads new events by it.
    ingest_batch bigint NOT NULL,
    PRIMARY KEY (event_time, event_id)
) PARTITION BY RANGE (event_time);

-- ingest_batch grows with insertion order, so a BRIN index finds one batch's rows at almost no cost
-- to ingestion.
CREATE INDEX log_events_ingest_batch ON log_events USING brin (ingest_batch);

CREATE SEQUENCE log_ingest_batches;

-- Creates the partition of one UTC day if it does not exist: log_events_pYYYYMMDD holding
-- [day 00:00 UTC, next day 00:00 UTC). Serialised by a transaction-level advisory lock, so replicas
-- and concurrent ingesters creating the same day do not collide.
CREATE FUNCTION log_ensure_partition(day date) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    partition_name text := 'log_events_p' || to_char(day, 'YYYYMMDD');
BEGIN
    IF to_regclass(partition_name) IS NOT NULL THEN
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock(7165470389);
    EXECUTE format(
        'CREATE TABLE IF NOT EXISTS %I PARTITION OF log_events FOR VALUES FROM (%L) TO (%L)',
        partition_name,
        (day::timestamp AT TIME ZONE 'UTC'),
        ((day + 1)::timestamp AT TIME ZONE 'UTC')
    );
END
$$;

-- The tail feed: one row per committed ingestion transaction. `number` comes from a one-row counter
-- updated last in the transaction, so its row lock is held only through COMMIT and numbers are
-- handed out in commit order: a tail reading "number > N" never misses a batch that commits later.
CREATE TABLE log_tail_counter (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    number bigint NOT NULL
);
INSERT INTO log_tail_counter (number) VALUES (0);

CREATE TABLE log_tail_batches (
    number bigint PRIMARY KEY,
    ingest_batch bigint NOT NULL,
    min_time timestamptz NOT NULL,
    max_time timestamptz NOT NULL,
    commit_time timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION log_publish_batch(batch bigint, min_t timestamptz, max_t timestamptz) RETURNS bigint
LANGUAGE sql AS $$
    WITH taken AS (UPDATE log_tail_counter SET number = number + 1 RETURNING number)
    INSERT INTO log_tail_batches (number, ingest_batch, min_time, max_time)
    SELECT number, batch, min_t, max_t FROM taken
    RETURNING number
$$;

-- Per-client ingestion counters, updated in the transaction that stores the client's batch, so every
-- replica reports the same figures and a rolled-back batch counts nothing.
CREATE TABLE log_ingestion_clients (
    client_id text COLLATE "C" PRIMARY KEY,
    received bigint NOT NULL DEFAULT 0,
    accepted bigint NOT NULL DEFAULT 0,
    duplicates bigint NOT NULL DEFAULT 0,
    dropped bigint NOT NULL DEFAULT 0,
    sequence_gaps bigint NOT NULL DEFAULT 0,
    batches bigint NOT NULL DEFAULT 0,
    last_sequence bigint NOT NULL DEFAULT 0,
    last_batch_time timestamptz NOT NULL DEFAULT now()
);

-- The control plane's own change events, written by every Mutation.record() in its transaction.
-- event_id "revision-{revision}-{seq}" makes a replayed write idempotent as well.
CREATE FUNCTION log_control_plane_change(
    p_revision bigint, p_seq integer, p_resource_type text, p_resource text, p_action text, p_actor text
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    t timestamptz := clock_timestamp();
    batch bigint := nextval('log_ingest_batches');
    link_version text := CASE WHEN p_resource_type = 'model_version' THEN p_resource ELSE '' END;
    link_deployment text := CASE WHEN p_resource LIKE 'deployments/%' THEN split_part(p_resource, '/', 1)
        || '/' || split_part(p_resource, '/', 2) ELSE '' END;
    link_policy text := CASE WHEN p_resource LIKE 'policies/%' THEN split_part(p_resource, '/', 1)
        || '/' || split_part(p_resource, '/', 2) ELSE '' END;
BEGIN
    PERFORM log_ensure_partition((t AT TIME ZONE 'UTC')::date);
    INSERT INTO log_events (
        event_time, event_id, service, level, kind, message, model_version, deployment, policy,
        change_resource, change_action, change_actor, change_revision, is_error, ingest_batch
    ) VALUES (
        t, 'revision-' || p_revision || '-' || p_seq, 'modelplane', 'info', 'control_plane_change',
        p_resource_type || ' ' || p_resource || ' ' || p_action, link_version, link_deployment,
        link_policy, p_resource, p_action, p_actor, p_revision, false, batch
    ) ON CONFLICT DO NOTHING;
    PERFORM log_publish_batch(batch, t, t);
END
$$;

-- Partitions for the days around the migration; the server's maintenance keeps creating them ahead.
SELECT log_ensure_partition(((now() AT TIME ZONE 'UTC')::date + d)) FROM generate_series(-1, 3) AS d;
