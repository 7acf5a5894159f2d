-- kiln's schema on PostgreSQL: the tables of migrations/sqlite/0001–0008 as they stand after
-- 0008, in PostgreSQL's own types (timestamptz, bigint, boolean). Lists the store reads and
-- writes whole (outputs, python_metadata) stay JSON text.

-- One row per build attempt. `platforms` is canonical, sorted and comma joined
-- (`linux/amd64,linux/arm64`): what a worker's claim matches. `kind` says which job `request`
-- holds; `worker` holds a BUILDING build while `lease_until` lies ahead. `owner_token` is sha256
-- (hex) of the submitter's token, `claims` how often a worker took the build. `log_chunks` and
-- `log_bytes` count the build's log (`build_logs`): an append bumps them on this row, whose lock
-- orders concurrent appends.
CREATE TABLE builds (
    id                TEXT        PRIMARY KEY,
    key               TEXT        NOT NULL,
    attempt           INTEGER     NOT NULL CHECK (attempt >= 1),
    image             TEXT        NOT NULL,
    format            TEXT        NOT NULL,
    platforms         TEXT        NOT NULL,
    request           TEXT        NOT NULL,
    kind              TEXT        NOT NULL CHECK (kind IN ('native', 'dockerfile', 'definition')),
    containerfile     TEXT        NOT NULL,
    environment       TEXT        NOT NULL,
    status            TEXT        NOT NULL CHECK (status IN ('PENDING', 'BUILDING', 'DONE')),
    succeeded         BOOLEAN,
    reason            TEXT,
    created_at        TIMESTAMPTZ NOT NULL,
    started_at        TIMESTAMPTZ,
    finished_at       TIMESTAMPTZ,
    conda_lock        TEXT,
    digest            TEXT,
    outputs           TEXT        NOT NULL DEFAULT '[]',
    worker            TEXT,
    lease_until       TIMESTAMPTZ,
    owner_token       TEXT,
    submitter_address TEXT,
    claims            INTEGER     NOT NULL DEFAULT 0,
    log_chunks        INTEGER     NOT NULL DEFAULT 0,
    log_bytes         BIGINT      NOT NULL DEFAULT 0,
    UNIQUE (key, attempt)
);

-- Single flight: at most one unfinished build per key, whichever node submits it.
CREATE UNIQUE INDEX builds_one_active_per_key ON builds (key) WHERE status <> 'DONE';
-- Claiming looks for the oldest claimable build of the kinds a worker takes.
CREATE INDEX builds_by_kind ON builds (kind, status, created_at);
-- The pruning pass deletes logs by age.
CREATE INDEX builds_by_finished ON builds (finished_at);

-- A build's log is its chunks in seq order; end_offset is the log's byte length after the
-- chunk, so a read from an offset skips whole chunks.
CREATE TABLE build_logs (
    build_id   TEXT    NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL,
    end_offset BIGINT  NOT NULL,
    chunk      TEXT    NOT NULL,
    PRIMARY KEY (build_id, seq)
);

-- What clients asked for through the Wave-compatible API, polled by id. `freeze` is a keyword
-- in PostgreSQL, hence quoted.
CREATE TABLE container_requests (
    id              TEXT        PRIMARY KEY,
    build_id        TEXT        REFERENCES builds (id),
    target_image    TEXT        NOT NULL,
    container_image TEXT        NOT NULL,
    format          TEXT        NOT NULL,
    cached          BOOLEAN     NOT NULL,
    "freeze"        BOOLEAN     NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX container_requests_by_time ON container_requests (created_at);

-- Accounts of the Singularity library API; only sha256(token) is kept.
CREATE TABLE users (
    name       TEXT        PRIMARY KEY,
    created_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE api_tokens (
    hash       TEXT        PRIMARY KEY,
    user_name  TEXT        NOT NULL REFERENCES users (name),
    created_at TIMESTAMPTZ NOT NULL
);

-- The library's three levels; names are unique within their parent.
CREATE TABLE library_entities (
    id          TEXT        PRIMARY KEY,
    name        TEXT        NOT NULL UNIQUE,
    description TEXT        NOT NULL,
    created_by  TEXT        NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE library_collections (
    id          TEXT        PRIMARY KEY,
    entity_id   TEXT        NOT NULL REFERENCES library_entities (id),
    name        TEXT        NOT NULL,
    description TEXT        NOT NULL,
    created_by  TEXT        NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    UNIQUE (entity_id, name)
);

CREATE TABLE library_containers (
    id            TEXT        PRIMARY KEY,
    collection_id TEXT        NOT NULL REFERENCES library_collections (id),
    name          TEXT        NOT NULL,
    description   TEXT        NOT NULL,
    created_by    TEXT        NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    UNIQUE (collection_id, name)
);

-- One SIF file of a container, named by the sha256 (hex) of its bytes.
CREATE TABLE library_images (
    id            TEXT        PRIMARY KEY,
    container_id  TEXT        NOT NULL REFERENCES library_containers (id),
    hash          TEXT        NOT NULL,
    description   TEXT        NOT NULL,
    arch          TEXT,
    size          BIGINT,
    uploaded_at   TIMESTAMPTZ,
    upload_secret TEXT,
    created_by    TEXT        NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    UNIQUE (container_id, hash)
);

-- `container:tag` for one architecture points at one image.
CREATE TABLE library_tags (
    container_id TEXT        NOT NULL REFERENCES library_containers (id),
    arch         TEXT        NOT NULL,
    tag          TEXT        NOT NULL,
    image_id     TEXT        NOT NULL REFERENCES library_images (id),
    updated_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (container_id, arch, tag)
);

-- A package's own layer in kiln's layer cache, reused by every image that has the package.
CREATE TABLE package_layers (
    key               TEXT   PRIMARY KEY,
    digest            TEXT   NOT NULL,
    diff_id           TEXT   NOT NULL,
    size              BIGINT NOT NULL,
    uncompressed_size BIGINT NOT NULL,
    python_metadata   TEXT   NOT NULL,
    license           TEXT
);

-- One row per new build charged to a client's daily allowance, inserted in the transaction that
-- creates the build. Rows older than a day count for nothing and are deleted as clients submit.
CREATE TABLE allowance_charges (
    client     TEXT        NOT NULL,
    build_id   TEXT        NOT NULL,
    charged_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX allowance_charges_by_client ON allowance_charges (client, charged_at);
CREATE INDEX allowance_charges_by_time ON allowance_charges (charged_at);

-- Where each layer blob kiln pushed lives (the repository first pushed to), so a push of the
-- same layer to another repository mounts it instead of uploading it again, on any node.
CREATE TABLE layer_homes (
    digest     TEXT PRIMARY KEY,
    repository TEXT NOT NULL
);

-- One row that the health check rewrites: a write that changes nothing, so a read-only or
-- full database fails the check.
CREATE TABLE health_probe (
    id         INTEGER     PRIMARY KEY CHECK (id = 1),
    checked_at TIMESTAMPTZ NOT NULL
);
