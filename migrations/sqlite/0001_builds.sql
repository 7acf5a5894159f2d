-- One row per build attempt. Lists (platforms, outputs) are JSON text and
-- times are RFC 3339 UTC text with microseconds, so they sort as strings.
CREATE TABLE builds (
    id            TEXT    PRIMARY KEY,
    key           TEXT    NOT NULL,
    attempt       INTEGER NOT NULL CHECK (attempt >= 1),
    image         TEXT    NOT NULL,
    format        TEXT    NOT NULL,
    platforms     TEXT    NOT NULL,
    request       TEXT    NOT NULL,
    containerfile TEXT    NOT NULL,
    environment   TEXT    NOT NULL,
    status        TEXT    NOT NULL CHECK (status IN ('PENDING', 'BUILDING', 'DONE')),
    succeeded     BOOLEAN,
    reason        TEXT,
    created_at    TEXT    NOT NULL,
    started_at    TEXT,
    finished_at   TEXT,
    conda_lock    TEXT,
    digest        TEXT,
    outputs       TEXT    NOT NULL DEFAULT '[]',
    UNIQUE (key, attempt)
);

-- Single flight: at most one unfinished build per key, even across processes.
CREATE UNIQUE INDEX builds_one_active_per_key ON builds (key) WHERE status <> 'DONE';

-- A build's log is its chunks in seq order; end_offset is the log's byte
-- length after the chunk, so a read from an offset skips whole chunks.
CREATE TABLE build_logs (
    build_id   TEXT    NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL,
    end_offset INTEGER NOT NULL,
    chunk      TEXT    NOT NULL,
    PRIMARY KEY (build_id, seq)
);
