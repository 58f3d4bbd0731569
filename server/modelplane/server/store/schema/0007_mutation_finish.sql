-- A write transaction's bookkeeping in one statement, sent just before COMMIT: the revision (unless the
-- transaction took it earlier), the wake-up, the change rows, their audit rows and control-plane log events,
-- and the stored response of the request id. The revision counter's row lock is thus taken as late as it
-- can be and held only through this statement and COMMIT, so commit order still equals revision order.
CREATE FUNCTION mutation_finish(
    p_revision bigint,          -- the revision taken earlier in the transaction, or NULL
    p_channel text,             -- the LISTEN/NOTIFY channel of the wake-up
    p_actor text,
    p_method text,
    p_request_id text,          -- '' when the write has none
    p_first_seq integer,        -- seq of the first change below (changes recorded before this call: 0)
    p_resource_types text[],    -- the changes, one array element each
    p_resources text[],
    p_kinds text[],
    p_snapshots jsonb[],
    p_remember boolean,         -- store p_response for the request id
    p_response jsonb
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    rev bigint := p_revision;
    n integer := coalesce(cardinality(p_resources), 0);
BEGIN
    IF rev IS NULL AND n > 0 THEN
        UPDATE revision_counter SET revision = revision + 1 RETURNING revision INTO rev;
        PERFORM pg_notify(p_channel, rev::text);
    END IF;
    IF n > 0 THEN
        INSERT INTO changes (revision, seq, resource_type, resource, kind, snapshot, actor)
        SELECT rev, p_first_seq + i - 1, p_resource_types[i], p_resources[i], p_kinds[i], p_snapshots[i], p_actor
        FROM generate_subscripts(p_resources, 1) AS i ORDER BY i;
        INSERT INTO audit_log (revision, actor, method, resource, request_id)
        SELECT rev, p_actor, p_method, p_resources[i], p_request_id
        FROM generate_subscripts(p_resources, 1) AS i ORDER BY i;
        PERFORM log_control_plane_change(rev, p_first_seq + i - 1, p_resource_types[i], p_resources[i],
                                         p_kinds[i], p_actor)
        FROM generate_subscripts(p_resources, 1) AS i ORDER BY i;
    END IF;
    IF p_remember THEN
        UPDATE request_ids SET response = p_response WHERE method = p_method AND request_id = p_request_id;
    END IF;
    RETURN rev;
END
$$;
