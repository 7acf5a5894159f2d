-- What clients asked for through the Wave-compatible API: each POST /v1alpha2/container gets a
-- request id that its status is polled by. A request points at the build that makes its image
-- (NULL for a pass-through of an existing image). Times are RFC 3339 UTC text.
CREATE TABLE container_requests (
    id TEXT PRIMARY KEY NOT NULL,
    build_id TEXT REFERENCES builds (id),
    target_image TEXT NOT NULL,
    container_image TEXT NOT NULL,
    format TEXT NOT NULL,
    cached INTEGER NOT NULL,
    freeze INTEGER NOT NULL,
    created_at TEXT NOT NULL
);
