-- modelplane: expand-only
-- The span of the caller's trace an event belongs to (EventLinks.span_id): with trace_id it leads from an
-- event to the exact span. Defaulted, so code from before it goes on writing events without one.
ALTER TABLE log_events ADD COLUMN span_id text NOT NULL DEFAULT '';

-- The control plane's own change events take the trace and span of the call that made the change, which
-- the server sets for its transaction (modelplane.trace_id and modelplane.span_id, see store/mutations.py)
-- when the call is traced; otherwise, and for code from before, both stay empty.
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
        trace_id, span_id, change_resource, change_action, change_actor, change_revision, is_error,
        ingest_batch
    ) VALUES (
        t, 'revision-' || p_revision || '-' || p_seq, 'modelplane', 'info', 'control_plane_change',
        p_resource_type || ' ' || p_resource || ' ' || p_action, link_version, link_deployment,
        link_policy, coalesce(current_setting('modelplane.trace_id', true), ''),
        coalesce(current_setting('modelplane.span_id', true), ''), p_resource, p_action, p_actor,
        p_revision, false, batch
    ) ON CONFLICT DO NOTHING;
    PERFORM log_publish_batch(batch, t, t);
END
$$;
