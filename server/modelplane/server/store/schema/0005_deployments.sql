-- The deployment manager: deployments and their traffic tables, rollouts, endpoint health, history.
-- Traffic tables and rollouts are stored as the JSON of their domain values (enums in stored form); the
-- columns beside them are what queries select or lock on.

CREATE TABLE deployments (
    id text COLLATE "C" PRIMARY KEY,
    model_id text COLLATE "C" NOT NULL,
    environment text COLLATE "C" NOT NULL,
    description text NOT NULL DEFAULT '',
    labels jsonb NOT NULL DEFAULT '{}',
    traffic jsonb NOT NULL,                -- the TrafficTable domain value
    active_rollout bigint,                 -- number of the active rollout; NULL when none is
    next_rollout bigint NOT NULL DEFAULT 1,
    revision bigint NOT NULL,              -- global revision of the last change
    create_time timestamptz NOT NULL,
    update_time timestamptz NOT NULL,
    etag text NOT NULL,
    -- Two deployments moving one alias would undo each other's rollouts.
    UNIQUE (model_id, environment)
);

-- Every transition of a rollout happens with its deployment's row locked (SELECT ... FOR UPDATE), so a
-- rollout row needs no lock of its own and two writers never interleave on one deployment.
CREATE TABLE rollouts (
    deployment_id text COLLATE "C" NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
    number bigint NOT NULL,
    state text NOT NULL CHECK (state IN ('waiting_ready', 'progressing', 'paused', 'rolling_back',
                                         'succeeded', 'rolled_back', 'aborted')),
    next_step_time timestamptz,            -- when the driver advances it; NULL when nothing is timed
    body jsonb NOT NULL,                   -- the Rollout domain value
    PRIMARY KEY (deployment_id, number)
);
-- One active rollout per deployment, whatever a caller races.
CREATE UNIQUE INDEX rollouts_one_active ON rollouts (deployment_id)
    WHERE state IN ('waiting_ready', 'progressing', 'paused', 'rolling_back');
-- The driver's scan: due timed rollouts.
CREATE INDEX rollouts_due ON rollouts (next_step_time)
    WHERE next_step_time IS NOT NULL AND state IN ('progressing', 'rolling_back');

-- The last reported readiness of each address, also of addresses no slot lists yet (endpoints of a
-- rollout about to start report before it does).
CREATE TABLE endpoint_health (
    deployment_id text COLLATE "C" NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
    address text COLLATE "C" NOT NULL,
    health text NOT NULL CHECK (health IN ('ready', 'not_ready')),
    report_time timestamptz NOT NULL,
    PRIMARY KEY (deployment_id, address)
);

CREATE TABLE deployment_history (
    id bigserial PRIMARY KEY,
    deployment_id text COLLATE "C" NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
    transition text NOT NULL,
    rollout bigint,
    rollout_state text,
    actor text NOT NULL,
    reason text NOT NULL DEFAULT '',
    traffic_before jsonb,                  -- NULL for 'created'
    traffic_after jsonb NOT NULL,
    revision bigint NOT NULL,
    create_time timestamptz NOT NULL
);
CREATE INDEX deployment_history_deployment ON deployment_history (deployment_id, id DESC);
