-- Accounts of the Singularity library API. A user is a name someone holds (first come, first
-- served, see src/api/accounts.rs); a token proves it. Only sha256(token) is kept, as lowercase
-- hex, so the database never holds a usable token. Times are RFC 3339 UTC text.
CREATE TABLE users (
    name TEXT PRIMARY KEY NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE api_tokens (
    hash TEXT PRIMARY KEY NOT NULL,
    user_name TEXT NOT NULL REFERENCES users (name),
    created_at TEXT NOT NULL
);

-- The library's three levels, `library://entity/collection/container`. Ids are 24 lowercase
-- hex characters, as Sylabs' library hands out; names are unique within their parent.
CREATE TABLE library_entities (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE library_collections (
    id TEXT PRIMARY KEY NOT NULL,
    entity_id TEXT NOT NULL REFERENCES library_entities (id),
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (entity_id, name)
);

CREATE TABLE library_containers (
    id TEXT PRIMARY KEY NOT NULL,
    collection_id TEXT NOT NULL REFERENCES library_collections (id),
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (collection_id, name)
);

-- One SIF file of a container, named by the sha256 (hex) of its bytes; the bytes themselves
-- live in the embedded registry's blob store. `arch`, `size` and `uploaded_at` are set once the
-- file is in (the architecture read from the file's header); until then `upload_secret` holds
-- sha256(hex) of the capability in the upload URL, if one was handed out.
CREATE TABLE library_images (
    id TEXT PRIMARY KEY NOT NULL,
    container_id TEXT NOT NULL REFERENCES library_containers (id),
    hash TEXT NOT NULL,
    description TEXT NOT NULL,
    arch TEXT,
    size INTEGER,
    uploaded_at TEXT,
    upload_secret TEXT,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (container_id, hash)
);

-- `container:tag` for one architecture points at one image; the same tag may point at another
-- image for another architecture.
CREATE TABLE library_tags (
    container_id TEXT NOT NULL REFERENCES library_containers (id),
    arch TEXT NOT NULL,
    tag TEXT NOT NULL,
    image_id TEXT NOT NULL REFERENCES library_images (id),
    updated_at TEXT NOT NULL,
    PRIMARY KEY (container_id, arch, tag)
);
