-- A package's own layer, made once and reused by every image that has the package: `key` is
-- sha256 (lowercase hex) of what determines the layer's bytes (the archive's sha256, the
-- prefix, the target Python where it matters, the layer format version); the digests are of
-- the gzip blob kiln keeps in its layer cache. `python_metadata` is a JSON array of the
-- `.dist-info`/`.egg-info` paths it installs (what pip sees as installed), `license` the
-- license a wheel's METADATA declares.
CREATE TABLE package_layers (
    key TEXT PRIMARY KEY NOT NULL,
    digest TEXT NOT NULL,
    diff_id TEXT NOT NULL,
    size INTEGER NOT NULL,
    uncompressed_size INTEGER NOT NULL,
    python_metadata TEXT NOT NULL,
    license TEXT
);
