-- modelplane: expand-only
-- The control plane's change events keep the trace and span of 0012 and reach the log tail's feed when their
-- revision is published, as 0011 made them (0012 wrote the function again as it was before 0011: each write
-- then took the log tail counter's row lock, which every other write waits on, until its COMMIT).
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
    INSERT INTO revision_log_batches (revision, ingest_batch, event_time) VALUES (p_revision, batch, t);
END
$$;
