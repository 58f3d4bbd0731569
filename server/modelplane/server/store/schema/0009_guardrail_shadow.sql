-- Shadow revisions of guardrail policies: a revision evaluated next to the active one, whose would-be
-- decisions are counted and sampled but never returned. As for violations, no checked or matched text is
-- stored: samples keep spans, masked excerpts and the policy's keyed hash of the match.

-- last_revision is the highest revision number of the policy: the active revision (policies.revision) or a
-- candidate written by SetShadowRevision after it. shadow_revision is 0 when there is no shadow.
ALTER TABLE policies ADD COLUMN last_revision bigint;
UPDATE policies SET last_revision = revision;
ALTER TABLE policies ALTER COLUMN last_revision SET NOT NULL;
ALTER TABLE policies ADD COLUMN shadow_revision bigint NOT NULL DEFAULT 0;
-- What the shadow is narrowed to: checks linked to this deployment ('' : every check) and slot ('': any).
ALTER TABLE policies ADD COLUMN shadow_deployment text NOT NULL DEFAULT '';
ALTER TABLE policies ADD COLUMN shadow_traffic_slot text NOT NULL DEFAULT ''
    CHECK (shadow_traffic_slot IN ('', 'stable', 'canary'));

-- Checks evaluated under a shadow, counted per second and outcome; each replica adds its counts in batches.
-- shadow_outcome: 'checked', 'unchecked' (the shadow ran out of its budget; shadow_decision is then its
-- fail mode's) or 'skipped' (this replica's shadow queue was full; shadow_decision is 'allow', unused).
CREATE TABLE guardrail_shadow_counts (
    bucket_time timestamptz NOT NULL,   -- truncated to the second
    policy_id text COLLATE "C" NOT NULL,
    active_revision bigint NOT NULL,
    shadow_revision bigint NOT NULL,
    active_decision text NOT NULL CHECK (active_decision IN ('allow', 'redact', 'block')),
    active_unchecked boolean NOT NULL,
    shadow_decision text NOT NULL CHECK (shadow_decision IN ('allow', 'redact', 'block')),
    shadow_outcome text NOT NULL CHECK (shadow_outcome IN ('checked', 'unchecked', 'skipped')),
    checks bigint NOT NULL,
    PRIMARY KEY (policy_id, shadow_revision, bucket_time, active_revision, active_decision, active_unchecked,
                 shadow_decision, shadow_outcome)
);

-- Per second and rule: in how many checks the rule broke under one revision only, or under both with a
-- different decision.
CREATE TABLE guardrail_shadow_rule_counts (
    bucket_time timestamptz NOT NULL,
    policy_id text COLLATE "C" NOT NULL,
    active_revision bigint NOT NULL,
    shadow_revision bigint NOT NULL,
    rule_id text NOT NULL,
    active_only bigint NOT NULL,
    shadow_only bigint NOT NULL,
    decision_changed bigint NOT NULL,
    PRIMARY KEY (policy_id, shadow_revision, bucket_time, active_revision, rule_id)
);

-- Sample violations of the shadow, from checks the two revisions decided differently (a few per check, a
-- bounded number per flush).
CREATE TABLE guardrail_shadow_samples (
    id text COLLATE "C" PRIMARY KEY,
    policy_id text COLLATE "C" NOT NULL,
    active_revision bigint NOT NULL,
    shadow_revision bigint NOT NULL,
    rule_id text NOT NULL,
    severity text NOT NULL CHECK (severity IN ('info', 'warning', 'error', 'critical')),
    category text NOT NULL,
    decision text NOT NULL CHECK (decision IN ('allow', 'redact', 'block')),
    shadow_decision text NOT NULL CHECK (shadow_decision IN ('allow', 'redact', 'block')),
    active_decision text NOT NULL CHECK (active_decision IN ('allow', 'redact', 'block')),
    model_version text NOT NULL DEFAULT '',
    deployment text NOT NULL DEFAULT '',
    traffic_slot text NOT NULL DEFAULT '' CHECK (traffic_slot IN ('', 'stable', 'canary')),
    trace_id text NOT NULL DEFAULT '',
    request_id text NOT NULL DEFAULT '',
    span_start bigint NOT NULL,
    span_end bigint NOT NULL,
    excerpt text NOT NULL,              -- masked: the matched part is never in it
    matched_hash bytea NOT NULL,        -- HMAC-SHA256 under the policy's key, as guardrail_violations
    create_time timestamptz NOT NULL
);
CREATE INDEX guardrail_shadow_samples_policy ON guardrail_shadow_samples
    (policy_id, shadow_revision, create_time DESC, id DESC);
