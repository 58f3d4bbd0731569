-- The guardrails monitor: versioned policies, check and violation records, and the key of their hashes.
-- Neither the checked text nor any matched text is ever stored: records keep spans, masked excerpts and
-- an HMAC of the matched text.

-- Server-wide secrets shared by every replica, created once (INSERT ... ON CONFLICT DO NOTHING) and read
-- at start. 'violation_hash_key' keys the HMAC-SHA256 of matched texts.
CREATE TABLE server_secrets (
    name text COLLATE "C" PRIMARY KEY,
    secret bytea NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now()
);

-- One row per live policy; its content lives in policy_revisions.
CREATE TABLE policies (
    id text COLLATE "C" PRIMARY KEY,
    revision bigint NOT NULL,           -- the latest policy revision
    first_revision bigint NOT NULL,     -- revisions before it belong to a deleted policy of the same id
    display_name text NOT NULL DEFAULT '',  -- of the latest revision, for list filters
    description text NOT NULL DEFAULT '',
    create_time timestamptz NOT NULL,
    update_time timestamptz NOT NULL,
    etag text NOT NULL
);
CREATE INDEX policies_create_time ON policies (create_time, id);
CREATE INDEX policies_update_time ON policies (update_time, id);

-- Immutable revisions. Not deleted with their policy, so that a record's (policy, revision) keeps naming
-- one set of rules, and numbers continue after a policy is deleted and created again.
CREATE TABLE policy_revisions (
    policy_id text COLLATE "C" NOT NULL,
    revision bigint NOT NULL,
    body jsonb NOT NULL,                -- the PolicyFields domain value as JSON (enums in stored form)
    create_time timestamptz NOT NULL,
    PRIMARY KEY (policy_id, revision)
);

-- One row per check that found something (or ran out of its time budget). Checks that found nothing are
-- counted in guardrail_check_counts instead.
CREATE TABLE guardrail_checks (
    id text COLLATE "C" PRIMARY KEY,
    policy_id text COLLATE "C" NOT NULL,
    policy_revision bigint NOT NULL,
    decision text NOT NULL CHECK (decision IN ('allow', 'redact', 'block')),
    highest_severity text NOT NULL DEFAULT '' CHECK (highest_severity IN ('', 'info', 'warning', 'error', 'critical')),
    violation_count integer NOT NULL,
    unchecked boolean NOT NULL DEFAULT false,
    model_version text NOT NULL DEFAULT '',
    deployment text NOT NULL DEFAULT '',
    traffic_slot text NOT NULL DEFAULT '' CHECK (traffic_slot IN ('', 'stable', 'canary')),
    trace_id text NOT NULL DEFAULT '',
    request_id text NOT NULL DEFAULT '',    -- the caller's links.request_id, to join with its other events
    check_request_id text NOT NULL DEFAULT '',  -- the CheckContent request_id; a repeat stores nothing
    create_time timestamptz NOT NULL
);
CREATE UNIQUE INDEX guardrail_checks_check_request_id ON guardrail_checks (check_request_id)
    WHERE check_request_id <> '';
CREATE INDEX guardrail_checks_time ON guardrail_checks (create_time);
CREATE INDEX guardrail_checks_policy_time ON guardrail_checks (policy_id, create_time);

-- One row per violation.
CREATE TABLE guardrail_violations (
    id text COLLATE "C" PRIMARY KEY,
    check_id text COLLATE "C" NOT NULL REFERENCES guardrail_checks (id) ON DELETE CASCADE,
    policy_id text COLLATE "C" NOT NULL,
    policy_revision bigint NOT NULL,
    rule_id text NOT NULL,
    severity text NOT NULL CHECK (severity IN ('info', 'warning', 'error', 'critical')),
    category text NOT NULL,
    decision text NOT NULL CHECK (decision IN ('allow', 'redact', 'block')),
    check_decision text NOT NULL CHECK (check_decision IN ('allow', 'redact', 'block')),
    model_version text NOT NULL DEFAULT '',
    deployment text NOT NULL DEFAULT '',
    traffic_slot text NOT NULL DEFAULT '',
    trace_id text NOT NULL DEFAULT '',
    request_id text NOT NULL DEFAULT '',
    span_start bigint NOT NULL,
    span_end bigint NOT NULL,
    excerpt text NOT NULL,              -- masked: the matched part is never in it
    matched_hash bytea NOT NULL,        -- HMAC-SHA256(server_secrets.violation_hash_key, matched text)
    create_time timestamptz NOT NULL
);
-- ListViolations pages newest first on (create_time, id); the filters narrow by these columns.
CREATE INDEX guardrail_violations_time ON guardrail_violations (create_time DESC, id DESC);
CREATE INDEX guardrail_violations_policy ON guardrail_violations (policy_id, create_time DESC);
CREATE INDEX guardrail_violations_rule ON guardrail_violations (rule_id, create_time DESC);
CREATE INDEX guardrail_violations_model_version ON guardrail_violations (model_version, create_time DESC)
    WHERE model_version <> '';
CREATE INDEX guardrail_violations_deployment ON guardrail_violations (deployment, create_time DESC)
    WHERE deployment <> '';
CREATE INDEX guardrail_violations_trace ON guardrail_violations (trace_id) WHERE trace_id <> '';
CREATE INDEX guardrail_violations_check ON guardrail_violations (check_id);

-- Checks that found nothing, counted per second and link: a clean check costs no write of its own; each
-- replica adds its counts in batches.
CREATE TABLE guardrail_check_counts (
    bucket_time timestamptz NOT NULL,   -- truncated to the second
    policy_id text COLLATE "C" NOT NULL,
    policy_revision bigint NOT NULL,
    model_version text NOT NULL DEFAULT '',
    deployment text NOT NULL DEFAULT '',
    traffic_slot text NOT NULL DEFAULT '',
    checks bigint NOT NULL,
    PRIMARY KEY (bucket_time, policy_id, policy_revision, model_version, deployment, traffic_slot)
);
