-- A write transaction's bookkeeping in one statement, sent just before COMMIT (mutations.py): the change
-- rows, their audit rows and control-plane log events, the wake-up, and the stored response of the request
-- id. The revision is taken at COMMIT, by a deferred trigger, unless the transaction took it earlier: so the
-- revision counter's row lock (the next writer waits on it) is held only while Postgres commits, never
-- across a round trip to a busy server, and commit order still equals revision order.

-- Writes the changes of one transaction under its revision; the audit rows take the given ids (NULL: the
-- next ones).
CREATE FUNCTION mutation_write_changes(
    rev bigint, p_channel text, p_actor text, p_method text, p_request_id text, p_first_seq integer,
    p_resource_types text[], p_resources text[], p_kinds text[], p_snapshots jsonb[], p_audit_ids bigint[]
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO changes (revision, seq, resource_type, resource, kind, snapshot, actor)
    SELECT rev, p_first_seq + i - 1, p_resource_types[i], p_resources[i], p_kinds[i], p_snapshots[i], p_actor
    FROM generate_subscripts(p_resources, 1) AS i ORDER BY i;
    INSERT INTO audit_log (id, revision, actor, method, resource, request_id)
    SELECT coalesce(p_audit_ids[i], nextval('audit_log_id_seq')), rev, p_actor, p_method, p_resources[i],
           p_request_id
    FROM generate_subscripts(p_resources, 1) AS i ORDER BY i;
    PERFORM log_control_plane_change(rev, p_first_seq + i - 1, p_resource_types[i], p_resources[i],
                                     p_kinds[i], p_actor)
    FROM generate_subscripts(p_resources, 1) AS i ORDER BY i;
END
$$;

-- The changes of transactions that have not taken a revision yet: one row each, written by
-- mutation_finish and consumed by the deferred trigger below when the transaction commits. Unlogged: a row
-- never outlives its transaction.
CREATE UNLOGGED TABLE mutation_pending (
    id bigserial PRIMARY KEY,
    channel text NOT NULL,
    actor text NOT NULL,
    method text NOT NULL,
    request_id text NOT NULL,
    first_seq integer NOT NULL,
    resource_types text[] NOT NULL,
    resources text[] NOT NULL,
    kinds text[] NOT NULL,
    snapshots jsonb[] NOT NULL,
    audit_ids bigint[] NOT NULL,
    -- Rows of these tables written with `placeholder` as their revision get the revision at COMMIT.
    placeholder bigint,
    placeholder_tables text[] NOT NULL
);

-- Gives the rows written with a revision placeholder their revision (the tables are named by the server's
-- code, never by a caller).
CREATE FUNCTION mutation_fill_placeholders(rev bigint, p_placeholder bigint, p_tables text[])
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1 .. coalesce(cardinality(p_tables), 0) LOOP
        EXECUTE format('UPDATE %I SET revision = $1 WHERE revision = $2', p_tables[i]) USING rev, p_placeholder;
    END LOOP;
END
$$;

CREATE FUNCTION mutation_take_revision_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    rev bigint;
BEGIN
    UPDATE revision_counter SET revision = revision + 1 RETURNING revision INTO rev;
    PERFORM pg_notify(NEW.channel, rev::text);
    PERFORM mutation_write_changes(rev, NEW.channel, NEW.actor, NEW.method, NEW.request_id, NEW.first_seq,
                                   NEW.resource_types, NEW.resources, NEW.kinds, NEW.snapshots, NEW.audit_ids);
    PERFORM mutation_fill_placeholders(rev, NEW.placeholder, NEW.placeholder_tables);
    DELETE FROM mutation_pending WHERE id = NEW.id;
    RETURN NULL;
END
$$;

-- Deferred: fires at COMMIT, after every statement of the transaction, as the last thing before it commits.
CREATE CONSTRAINT TRIGGER mutation_pending_revision AFTER INSERT ON mutation_pending
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION mutation_take_revision_at_commit();

-- Returns (the revision, NULL) when the transaction took it already, else (NULL, the id of its first audit
-- row), by which the revision taken at COMMIT is read afterwards.
CREATE FUNCTION mutation_finish(
    p_revision bigint,          -- the revision taken earlier in the transaction, or NULL
    p_channel text,             -- the LISTEN/NOTIFY channel of the wake-up
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
    p_placeholder_tables text[],
    OUT revision bigint,
    OUT first_audit_id bigint
) LANGUAGE plpgsql AS $$
DECLARE
    n integer := coalesce(cardinality(p_resources), 0);
    audit_ids bigint[];
BEGIN
    revision := p_revision;
    IF p_revision IS NOT NULL THEN
        PERFORM mutation_write_changes(p_revision, p_channel, p_actor, p_method, p_request_id, p_first_seq,
                                       p_resource_types, p_resources, p_kinds, p_snapshots, NULL);
        PERFORM mutation_fill_placeholders(p_revision, p_placeholder, p_placeholder_tables);
    ELSIF n > 0 THEN
        SELECT array_agg(nextval('audit_log_id_seq')) INTO audit_ids FROM generate_series(1, n);
        first_audit_id := audit_ids[1];
        INSERT INTO mutation_pending (channel, actor, method, request_id, first_seq, resource_types, resources,
                                      kinds, snapshots, audit_ids, placeholder, placeholder_tables)
        VALUES (p_channel, p_actor, p_method, p_request_id, p_first_seq, p_resource_types, p_resources,
                p_kinds, p_snapshots, audit_ids, p_placeholder, p_placeholder_tables);
    END IF;
    IF p_remember THEN
        UPDATE request_ids SET response = p_response WHERE method = p_method AND request_id = p_request_id;
    END IF;
END
$$;

-- The registry's alias history names the revision of each move: written with a placeholder (a negative
-- number) and given the revision at COMMIT; this index finds the few rows still waiting for theirs.
CREATE INDEX alias_history_revision_placeholder ON alias_history (revision) WHERE revision < 0;
