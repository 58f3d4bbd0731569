-- The foundation every capability shares: the global revision, the change log, audit, idempotency, tokens.

-- One row. Every write transaction bumps it with UPDATE ... RETURNING, which holds the row lock until
-- COMMIT: the next writer waits, so commit order equals revision order and a reader of
-- "revision > N" never sees a gap fill in later.
CREATE TABLE revision_counter (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    revision bigint NOT NULL,
    -- Changes up to this revision have been deleted from `changes`; a watch may not start before it.
    compacted_through bigint NOT NULL DEFAULT 0
);
INSERT INTO revision_counter (revision) VALUES (0);

-- Append-only change log read by the watch RPCs.
CREATE TABLE changes (
    revision bigint NOT NULL,
    seq integer NOT NULL,             -- a transaction may change several resources under one revision
    resource_type text NOT NULL,      -- 'model', 'model_version', 'alias', ...
    resource text NOT NULL,           -- resource name, e.g. 'models/chat/versions/3'
    kind text NOT NULL CHECK (kind IN ('created', 'updated', 'deleted')),
    snapshot jsonb,                   -- the resource after the change; NULL on delete
    actor text NOT NULL,
    change_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (revision, seq)
);
CREATE INDEX changes_type_revision ON changes (resource_type, revision);

-- One row per mutating RPC, written in the same transaction as the change.
CREATE TABLE audit_log (
    id bigserial PRIMARY KEY,
    revision bigint NOT NULL,
    actor text NOT NULL,
    method text NOT NULL,
    resource text NOT NULL,
    request_id text NOT NULL DEFAULT '',
    audit_time timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_resource ON audit_log (resource, id);

-- Request ids of mutating RPCs (AIP-155): a repeat returns the stored response.
CREATE TABLE request_ids (
    method text NOT NULL,
    request_id text NOT NULL,
    fingerprint bytea NOT NULL,       -- sha256 of the request, to reject the same id with another body
    response jsonb,                   -- the first call's result, set before COMMIT
    create_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (method, request_id)
);

-- Bearer tokens; only a SHA-256 of the secret is kept.
CREATE TABLE api_tokens (
    id text PRIMARY KEY,
    name text NOT NULL UNIQUE,
    role text NOT NULL CHECK (role IN ('admin', 'operator', 'service', 'reader')),
    secret_sha256 bytea NOT NULL UNIQUE,
    create_time timestamptz NOT NULL DEFAULT now(),
    revoke_time timestamptz
);
