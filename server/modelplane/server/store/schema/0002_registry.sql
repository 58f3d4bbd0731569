-- The model registry: models, immutable versions with LLM metadata, aliases and their history.

-- Ids and sort keys use the "C" collation: list order (and page tokens) must not depend on the locale.
CREATE TABLE models (
    id text COLLATE "C" PRIMARY KEY,
    display_name text NOT NULL DEFAULT '',
    description text NOT NULL DEFAULT '',
    provider text NOT NULL,
    labels jsonb NOT NULL DEFAULT '{}',
    next_version bigint NOT NULL DEFAULT 1,    -- version numbers are never reused, even after a delete
    create_time timestamptz NOT NULL,
    update_time timestamptz NOT NULL,
    etag text NOT NULL
);
CREATE INDEX models_create_time ON models (create_time, id);
CREATE INDEX models_update_time ON models (update_time, id);

CREATE TABLE model_versions (
    model_id text COLLATE "C" NOT NULL REFERENCES models (id) ON DELETE CASCADE,
    version_id bigint NOT NULL,
    -- A sortable, unique text key "model/0000000000000000042" used as the keyset tiebreak.
    sort_key text COLLATE "C" GENERATED ALWAYS AS (model_id || '/' || lpad(version_id::text, 19, '0')) STORED,
    description text NOT NULL DEFAULT '',
    source_uri text NOT NULL,
    source_sha256 text NOT NULL DEFAULT '',
    capabilities text[] NOT NULL DEFAULT '{}',  -- Capability names, lower-case without prefix
    context_window bigint NOT NULL,
    max_output_tokens bigint NOT NULL,
    currency_code text NOT NULL,
    input_price bigint NOT NULL,               -- micro-units per million tokens
    output_price bigint NOT NULL,
    cached_input_price bigint,                 -- NULL: priced as input
    reasoning_price bigint,                    -- NULL: priced as output
    state text NOT NULL CHECK (state IN ('ready', 'deprecated', 'archived')),
    labels jsonb NOT NULL DEFAULT '{}',
    parent_version text NOT NULL DEFAULT '',
    source_run text NOT NULL DEFAULT '',
    create_time timestamptz NOT NULL,
    update_time timestamptz NOT NULL,
    etag text NOT NULL,
    PRIMARY KEY (model_id, version_id)
);
CREATE UNIQUE INDEX model_versions_sort_key ON model_versions (sort_key);
CREATE INDEX model_versions_create_time ON model_versions (create_time, sort_key);

CREATE TABLE model_aliases (
    model_id text NOT NULL REFERENCES models (id) ON DELETE CASCADE,
    alias text COLLATE "C" NOT NULL,
    version_id bigint NOT NULL,
    update_time timestamptz NOT NULL,
    updated_by text NOT NULL,
    PRIMARY KEY (model_id, alias),
    FOREIGN KEY (model_id, version_id) REFERENCES model_versions (model_id, version_id)
);
CREATE INDEX model_aliases_version ON model_aliases (model_id, version_id);

CREATE TABLE alias_history (
    id bigserial PRIMARY KEY,
    model_id text NOT NULL REFERENCES models (id) ON DELETE CASCADE,
    alias text NOT NULL,
    from_version bigint,                       -- NULL: the move created the alias
    to_version bigint,                         -- NULL: the move deleted the alias
    actor text NOT NULL,
    reason text NOT NULL DEFAULT '',
    move_time timestamptz NOT NULL,
    revision bigint NOT NULL
);
CREATE INDEX alias_history_model ON alias_history (model_id, id DESC);
