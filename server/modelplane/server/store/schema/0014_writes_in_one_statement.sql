-- modelplane: expand-only
-- The registry's hottest writes, CreateModelVersion and SetAlias, each as one statement: a function that
-- claims the request id (or finds the first call's response), does the use case, writes its change, audit and
-- log rows through mutation_finish and returns the result, run outside an explicit transaction so that the
-- statement's own transaction commits it. One round trip instead of four to eight: what a write costs the
-- server and Postgres is mostly per round trip (see the README's "How a write commits").
--
-- A use case refuses with SQLSTATE MP001: MESSAGE names the refusal, DETAIL carries its value; the server
-- turns it into the RPC's error (store/writes.py, registry/service.py). Nothing of a refused write stays: the
-- statement's transaction rolls back, request id claim included.

-- Timestamps in the form the server's snapshots use (store/snapshots.py: datetime.isoformat of a UTC time),
-- whatever the session's TimeZone. STABLE as to_char is: a SQL function is inlined into the statement that
-- calls it only when it claims no more than its body is, and otherwise planned again on every call.
CREATE FUNCTION snapshot_time(t timestamptz) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US') || '+00:00'
$$;

-- A version's snapshot, the JSON form of registry.domain.ModelVersion (store/snapshots.py's to_json); NULL
-- when the version does not exist. tests/store/test_sql_snapshots.py holds it equal to the server's own.
-- PL/pgSQL rather than SQL: a SQL function that cannot be inlined (this one reads tables) is parsed and
-- planned again on every call, where PL/pgSQL keeps its plans.
CREATE FUNCTION registry_version_json(p_model text, p_version bigint) RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    snapshot jsonb;
BEGIN
    SELECT jsonb_build_object(
        'model_id', v.model_id, 'version_id', v.version_id, 'provider', m.provider,
        'description', v.description, 'source_uri', v.source_uri, 'source_sha256', v.source_sha256,
        'capabilities', to_jsonb(v.capabilities), 'context_window', v.context_window,
        'max_output_tokens', v.max_output_tokens,
        'pricing', jsonb_build_object(
            'currency_code', v.currency_code, 'input', v.input_price, 'output', v.output_price,
            'cached_input', v.cached_input_price, 'reasoning', v.reasoning_price),
        'state', v.state, 'labels', v.labels, 'parent_version', v.parent_version, 'source_run', v.source_run,
        'aliases', to_jsonb(ARRAY(SELECT a.alias FROM model_aliases a
                                  WHERE a.model_id = v.model_id AND a.version_id = v.version_id
                                  ORDER BY a.alias)),
        'create_time', snapshot_time(v.create_time), 'update_time', snapshot_time(v.update_time),
        'etag', v.etag)
    INTO snapshot
    FROM model_versions v JOIN models m ON m.id = v.model_id
    WHERE v.model_id = p_model AND v.version_id = p_version;
    RETURN snapshot;
END
$$;

-- An alias's snapshot, the JSON form of registry.domain.Alias.
CREATE FUNCTION registry_alias_json(a model_aliases) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('model_id', a.model_id, 'alias', a.alias, 'version_id', a.version_id,
                              'update_time', snapshot_time(a.update_time), 'updated_by', a.updated_by)
$$;

-- Claims a write's request id for this transaction, as Mutation.begin does: NULL when claimed here (or when
-- the write has none), else {"replayed": the first call's response}. A concurrent first call's uncommitted
-- claim makes the INSERT wait for it; each statement below reads what has committed by then. The same id
-- with another request is refused (request_id_reused).
CREATE FUNCTION mutation_claim(p_method text, p_request_id text, p_fingerprint bytea)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    stored_fingerprint bytea;
    stored_response jsonb;
BEGIN
    IF p_request_id = '' THEN
        RETURN NULL;
    END IF;
    FOR attempt IN 1 .. 3 LOOP
        INSERT INTO request_ids (method, request_id, fingerprint) VALUES (p_method, p_request_id, p_fingerprint)
        ON CONFLICT DO NOTHING;
        IF FOUND THEN
            RETURN NULL;
        END IF;
        SELECT fingerprint, response INTO stored_fingerprint, stored_response
        FROM request_ids WHERE method = p_method AND request_id = p_request_id;
        IF FOUND THEN
            IF stored_fingerprint <> p_fingerprint THEN
                RAISE EXCEPTION USING ERRCODE = 'MP001', MESSAGE = 'request_id_reused';
            END IF;
            RETURN jsonb_build_object('replayed', stored_response);
        END IF;
        -- Pruned between the two statements (request ids expire): claim it again.
    END LOOP;
    RAISE EXCEPTION 'request id % of % could not be claimed', p_request_id, p_method;
END
$$;

-- Names the traced call that made this transaction's control-plane events (read by log_control_plane_change).
CREATE FUNCTION mutation_trace(p_trace_id text, p_span_id text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF p_trace_id <> '' THEN
        PERFORM set_config('modelplane.trace_id', p_trace_id, true), set_config('modelplane.span_id', p_span_id, true);
    END IF;
END
$$;

-- CreateModelVersion: the model's next number (locking the model row, so concurrent creates on one model get
-- consecutive numbers), the version, and its change. Refusals: parent_version_not_found, model_not_found.
CREATE FUNCTION registry_create_version(
    p_actor text, p_method text, p_request_id text, p_fingerprint bytea, p_trace_id text, p_span_id text,
    p_model text, p_parent_model text, p_parent_number bigint,
    p_description text, p_source_uri text, p_source_sha256 text, p_capabilities text[],
    p_context_window bigint, p_max_output_tokens bigint, p_currency_code text, p_input_price bigint,
    p_output_price bigint, p_cached_input_price bigint, p_reasoning_price bigint, p_state text, p_labels jsonb,
    p_parent_version text, p_source_run text, p_etag text
) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    replayed jsonb := mutation_claim(p_method, p_request_id, p_fingerprint);
    number bigint;
    created jsonb;
    rev bigint;
BEGIN
    IF replayed IS NOT NULL THEN
        RETURN replayed;
    END IF;
    IF p_parent_model <> '' AND NOT EXISTS (
        SELECT 1 FROM model_versions WHERE model_id = p_parent_model AND version_id = p_parent_number
    ) THEN
        RAISE EXCEPTION USING ERRCODE = 'MP001', MESSAGE = 'parent_version_not_found';
    END IF;
    UPDATE models SET next_version = next_version + 1 WHERE id = p_model RETURNING next_version - 1 INTO number;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'MP001', MESSAGE = 'model_not_found';
    END IF;
    INSERT INTO model_versions (
        model_id, version_id, description, source_uri, source_sha256, capabilities, context_window,
        max_output_tokens, currency_code, input_price, output_price, cached_input_price, reasoning_price, state,
        labels, parent_version, source_run, create_time, update_time, etag
    ) VALUES (
        p_model, number, p_description, p_source_uri, p_source_sha256, p_capabilities, p_context_window,
        p_max_output_tokens, p_currency_code, p_input_price, p_output_price, p_cached_input_price,
        p_reasoning_price, p_state, p_labels, p_parent_version, p_source_run, clock_timestamp(),
        clock_timestamp(), p_etag
    );
    created := registry_version_json(p_model, number);
    PERFORM mutation_trace(p_trace_id, p_span_id);
    rev := mutation_finish(
        NULL, p_actor, p_method, p_request_id, 0, ARRAY['model_version'],
        ARRAY['models/' || p_model || '/versions/' || number], ARRAY['created'], ARRAY[created],
        p_request_id <> '', created, NULL, NULL);
    RETURN jsonb_build_object('revision', rev, 'result', created);
END
$$;

-- Points an alias at a version, with its history row under p_revision and the changes to record: the alias
-- (created or updated) and the versions whose alias lists changed. p_expect: 'any' (whatever it points to
-- now), 'absent' (it must not exist yet) or 'at' (it must point to p_expected now). Refusals:
-- model_not_found, version_not_found, version_archived, alias_conflict (DETAIL: the version it points to,
-- '' when none), alias_keeps_moving. Used by registry_set_alias and, inside a deployment's write, by the
-- server (RegistryService.move_alias_in).
CREATE FUNCTION registry_point_alias(
    p_model text, p_alias text, p_number bigint, p_expect text, p_expected bigint, p_reason text,
    p_actor text, p_revision bigint,
    OUT moved jsonb, OUT resource_types text[], OUT resources text[], OUT kinds text[], OUT snapshots jsonb[]
) LANGUAGE plpgsql AS $$
DECLARE
    target_state text;
    previous bigint;
    current_version bigint;
    moved_row model_aliases;
    snapshot jsonb;
    n bigint;
BEGIN
    SELECT state INTO target_state FROM model_versions WHERE model_id = p_model AND version_id = p_number;
    IF NOT FOUND THEN
        IF NOT EXISTS (SELECT 1 FROM models WHERE id = p_model) THEN
            RAISE EXCEPTION USING ERRCODE = 'MP001', MESSAGE = 'model_not_found';
        END IF;
        RAISE EXCEPTION USING ERRCODE = 'MP001', MESSAGE = 'version_not_found';
    END IF;
    IF target_state = 'archived' THEN
        RAISE EXCEPTION USING ERRCODE = 'MP001', MESSAGE = 'version_archived';
    END IF;
    FOR attempt IN 1 .. 16 LOOP
        IF p_expect = 'any' THEN
            -- No guard asked for: a compare-and-set on whatever the alias points to now.
            SELECT version_id INTO previous FROM model_aliases WHERE model_id = p_model AND alias = p_alias;
            IF NOT FOUND THEN
                previous := NULL;
            END IF;
        ELSIF p_expect = 'absent' THEN
            previous := NULL;
        ELSE
            previous := p_expected;
        END IF;
        IF previous IS NULL THEN
            INSERT INTO model_aliases (model_id, alias, version_id, update_time, updated_by)
            VALUES (p_model, p_alias, p_number, now(), p_actor) ON CONFLICT DO NOTHING
            RETURNING * INTO moved_row;
        ELSE
            UPDATE model_aliases SET version_id = p_number, update_time = now(), updated_by = p_actor
            WHERE model_id = p_model AND alias = p_alias AND version_id = previous
            RETURNING * INTO moved_row;
        END IF;
        EXIT WHEN FOUND;
        IF p_expect <> 'any' THEN
            SELECT version_id INTO current_version FROM model_aliases WHERE model_id = p_model AND alias = p_alias;
            RAISE EXCEPTION USING ERRCODE = 'MP001', MESSAGE = 'alias_conflict',
                DETAIL = coalesce(current_version::text, '');
        END IF;
        IF attempt = 16 THEN
            RAISE EXCEPTION USING ERRCODE = 'MP001', MESSAGE = 'alias_keeps_moving';
        END IF;
    END LOOP;
    INSERT INTO alias_history (model_id, alias, from_version, to_version, actor, reason, move_time, revision)
    VALUES (p_model, p_alias, previous, p_number, p_actor, p_reason, moved_row.update_time, p_revision);
    moved := registry_alias_json(moved_row);
    resource_types := ARRAY['alias'];
    resources := ARRAY['models/' || p_model || '/aliases/' || p_alias];
    kinds := ARRAY[CASE WHEN previous IS NULL THEN 'created' ELSE 'updated' END];
    snapshots := ARRAY[moved];
    -- The versions' alias lists changed too: watchers of versions see it.
    FOR n IN SELECT DISTINCT x FROM unnest(ARRAY[p_number, previous]) AS x WHERE x IS NOT NULL ORDER BY x LOOP
        snapshot := registry_version_json(p_model, n);
        IF snapshot IS NOT NULL THEN
            resource_types := resource_types || 'model_version'::text;
            resources := resources || ('models/' || p_model || '/versions/' || n);
            kinds := kinds || 'updated'::text;
            snapshots := snapshots || snapshot;
        END IF;
    END LOOP;
END
$$;

-- SetAlias.
CREATE FUNCTION registry_set_alias(
    p_actor text, p_method text, p_request_id text, p_fingerprint bytea, p_trace_id text, p_span_id text,
    p_model text, p_alias text, p_number bigint, p_expect text, p_expected bigint, p_reason text
) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    replayed jsonb := mutation_claim(p_method, p_request_id, p_fingerprint);
    rev bigint;
    point record;
BEGIN
    IF replayed IS NOT NULL THEN
        RETURN replayed;
    END IF;
    -- Taken first, for the history row: the statement holds it for the little time it runs.
    rev := take_revision();
    SELECT * INTO point FROM registry_point_alias(
        p_model, p_alias, p_number, p_expect, p_expected, p_reason, p_actor, rev);
    PERFORM mutation_trace(p_trace_id, p_span_id);
    PERFORM mutation_finish(
        rev, p_actor, p_method, p_request_id, 0, point.resource_types, point.resources, point.kinds,
        point.snapshots, p_request_id <> '', point.moved, NULL, NULL);
    RETURN jsonb_build_object('revision', rev, 'result', point.moved);
END
$$;

-- Two functions of the write path in PL/pgSQL, for the reason given at registry_version_json: a SQL function
-- returning a record, or with a data-modifying WITH, is never inlined, and parsing and planning them again on
-- every call was a tenth of Postgres's CPU in a write. Same signatures, same results.
CREATE OR REPLACE FUNCTION revision_lock_keys(rev bigint, OUT k1 integer, OUT k2 integer)
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    k1 := (1297088512 + (rev >> 32))::integer;
    k2 := ((rev & 4294967295)
           - CASE WHEN (rev & 4294967295) >= 2147483648 THEN 4294967296 ELSE 0 END)::integer;
END
$$;

CREATE OR REPLACE FUNCTION log_publish_batch(batch bigint, min_t timestamptz, max_t timestamptz) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    taken bigint;
BEGIN
    UPDATE log_tail_counter SET number = number + 1 RETURNING number INTO taken;
    INSERT INTO log_tail_batches (number, ingest_batch, min_time, max_time) VALUES (taken, batch, min_t, max_t);
    RETURN taken;
END
$$;
