-- Revisions from a sequence, published through a settled horizon, instead of a counter row every write locks.
--
-- Before: each write bumped the one row of revision_counter at COMMIT and held its row lock (and the lock
-- NOTIFY takes) through the commit's WAL flush, so commits ran one at a time and could not share a flush.
-- Now a write takes its revision from `revision_seq` just before COMMIT, holding a transaction-level
-- advisory lock keyed by that revision until it has committed (Postgres releases a transaction's locks
-- only after its commit is visible). A revision is *settled* when no transaction holds it any more:
-- committed (and visible to every later snapshot) or rolled back. revision_counter.revision is now the
-- published horizon: the highest revision at or below which every revision is settled. Readers of
-- `revision > N` read only up to it, so a change that commits later with a smaller revision is never
-- skipped: commit order need not equal revision order any more, but what a reader sees is the same as if
-- it did. Each server process publishes after its writes commit (one publication covering many writes)
-- and sends the NOTIFY then, once per publication instead of once per write.
--
-- Not expand-only: code from before this file would still bump the counter row itself.

-- The advisory locks of this scheme: the gate (class key GATE, 0) and one lock per revision in flight,
-- keyed (REVISION_CLASS + revision / 2^32, revision mod 2^32 as a signed int4).
CREATE FUNCTION revision_lock_keys(rev bigint, OUT k1 integer, OUT k2 integer)
LANGUAGE sql IMMUTABLE AS $$
    SELECT (1297088512 + (rev >> 32))::integer,
           ((rev & 4294967295) - CASE WHEN (rev & 4294967295) >= 2147483648 THEN 4294967296 ELSE 0 END)::integer
$$;

CREATE SEQUENCE revision_seq AS bigint MINVALUE 1;
SELECT setval('revision_seq', greatest(revision, 1), revision > 0) FROM revision_counter;

-- Takes the next revision and holds its lock until the transaction ends. The shared gate makes taking the
-- number and locking it one step for `settled_revision` (which takes the gate exclusively): it never sees
-- a revision handed out and not yet locked.
CREATE FUNCTION take_revision() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    rev bigint;
BEGIN
    PERFORM pg_advisory_lock_shared(1297088511, 0);
    BEGIN
        rev := nextval('revision_seq');
        PERFORM pg_advisory_xact_lock(k.k1, k.k2) FROM revision_lock_keys(rev) AS k;
    EXCEPTION WHEN OTHERS OR query_canceled THEN
        -- A session-level lock outlives the transaction: never leave the gate held.
        PERFORM pg_advisory_unlock_shared(1297088511, 0);
        RAISE;
    END;
    PERFORM pg_advisory_unlock_shared(1297088511, 0);
    RETURN rev;
END
$$;

-- The highest revision at or below which no revision is still held by a transaction, found by trying each
-- revision's lock in turn from the published one up (at most p_limit of them): a lock that can be had is a
-- revision settled. The shared locks taken stay until this statement's transaction ends; no writer asks for
-- them again, as the sequence never hands a number out twice. (Reading pg_locks instead costs a scan of
-- the whole lock table, hundreds of microseconds.)
CREATE FUNCTION settled_revision(p_limit integer DEFAULT 1000) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    handed_out bigint;
    settled bigint;
    held boolean := false;
BEGIN
    SELECT revision INTO settled FROM revision_counter;
    PERFORM pg_advisory_lock(1297088511, 0);
    BEGIN
        SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END INTO handed_out FROM revision_seq;
        WHILE settled < handed_out AND p_limit > 0 AND NOT held LOOP
            SELECT NOT pg_try_advisory_xact_lock_shared(k.k1, k.k2) INTO held
            FROM revision_lock_keys(settled + 1) AS k;
            IF NOT held THEN
                settled := settled + 1;
            END IF;
            p_limit := p_limit - 1;
        END LOOP;
    EXCEPTION WHEN OTHERS OR query_canceled THEN
        PERFORM pg_advisory_unlock(1297088511, 0);
        RAISE;
    END;
    PERFORM pg_advisory_unlock(1297088511, 0);
    RETURN settled;
END
$$;

-- A write's control-plane log events reach the log tail's feed (log_tail_batches, numbered by the one-row
-- log_tail_counter in commit order) when its revision is published, not in the write's own transaction:
-- the counter's row lock would make every write wait for the one before it to commit. Until then each
-- event's ingest batch waits here, under its revision.
CREATE TABLE revision_log_batches (
    revision bigint NOT NULL,
    ingest_batch bigint NOT NULL,
    event_time timestamptz NOT NULL,
    PRIMARY KEY (revision, ingest_batch)
);

CREATE OR REPLACE FUNCTION log_control_plane_change(
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
    INSERT INTO revision_log_batches (revision, ingest_batch, event_time) VALUES (p_revision, batch, t);
END
$$;

-- Moves the published horizon (revision_counter.revision) up to the settled revision, hands the log events
-- of the revisions it passes to the log tail's feed in revision order, and wakes the watchers with a NOTIFY
-- carrying it when it moved. Returns the published horizon. The settled revision is found before the
-- UPDATE's snapshot is taken, so whoever reads the new horizon sees every revision up to it.
CREATE FUNCTION publish_revision(p_channel text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    settled bigint := settled_revision();
    previous bigint;
    published bigint;
BEGIN
    SELECT revision INTO previous FROM revision_counter;
    IF previous < settled THEN
        -- Another process may be publishing: wait for it, then read what it published.
        SELECT revision INTO previous FROM revision_counter FOR UPDATE;
    END IF;
    IF previous < settled THEN
        UPDATE revision_counter SET revision = settled RETURNING revision INTO published;
        PERFORM log_publish_batch(b.ingest_batch, b.event_time, b.event_time)
        FROM (SELECT ingest_batch, event_time FROM revision_log_batches
              WHERE revision > previous AND revision <= settled ORDER BY revision, ingest_batch) AS b;
        DELETE FROM revision_log_batches WHERE revision <= settled;
        PERFORM pg_notify(p_channel, published::text);
        RETURN published;
    END IF;
    RETURN previous;
END
$$;

-- The write's bookkeeping in one statement before COMMIT, as before, but under a revision taken here (or
-- given, when the transaction took it earlier).
DROP FUNCTION mutation_finish(bigint, text, text, text, text, integer, text[], text[], text[], jsonb[], boolean,
                              jsonb, bigint, text[]);
DROP TABLE mutation_pending;
DROP FUNCTION mutation_take_revision_at_commit();

CREATE FUNCTION mutation_finish(
    p_revision bigint,          -- the revision taken earlier in the transaction, or NULL
    p_actor text,
    p_method text,
    p_request_id text,          -- '' when the write has none
    p_first_seq integer,        -- seq of the first change below
    p_resource_types text[],    -- the changes, one array element each
    p_resources text[],
    p_kinds text[],
    p_snapshots jsonb[],
    p_remember boolean,         -- store p_response for the request id
    p_response jsonb,
    p_placeholder bigint,       -- the revision placeholder written into rows of p_placeholder_tables
    p_placeholder_tables text[]
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    rev bigint := p_revision;
BEGIN
    IF rev IS NULL AND (coalesce(cardinality(p_resources), 0) > 0
                        OR coalesce(cardinality(p_placeholder_tables), 0) > 0) THEN
        rev := take_revision();
    END IF;
    IF rev IS NOT NULL THEN
        PERFORM mutation_write_changes(rev, '', p_actor, p_method, p_request_id, p_first_seq,
                                       p_resource_types, p_resources, p_kinds, p_snapshots, NULL);
        PERFORM mutation_fill_placeholders(rev, p_placeholder, p_placeholder_tables);
    END IF;
    IF p_remember THEN
        UPDATE request_ids SET response = p_response WHERE method = p_method AND request_id = p_request_id;
    END IF;
    RETURN rev;
END
$$;
