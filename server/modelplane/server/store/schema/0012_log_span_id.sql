-- modelplane: expand-only
-- The span of the caller's trace an event belongs to (EventLinks.span_id): with trace_id it leads from an
-- event to the exact span. Defaulted, so code from before it goes on writing events without one.
ALTER TABLE log_events ADD COLUMN span_id text NOT NULL DEFAULT '';
