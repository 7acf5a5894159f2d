-- State that every kiln process on one database shares, so any node can answer any request.

-- Builds' platforms, canonical: sorted and comma joined (`linux/amd64,linux/arm64`) instead of a
-- JSON array, so a worker's claim matches them with LIKE (`',' || platforms || ','`).
UPDATE builds SET platforms = COALESCE(
    (SELECT group_concat(value, ',' ORDER BY value)
     FROM (SELECT DISTINCT value FROM json_each(builds.platforms))),
    '')
WHERE json_valid(platforms) AND json_type(platforms) = 'array';

-- One row per new build charged to a client's daily allowance; the submit that creates the
-- build inserts it in the same transaction. Rows older than a day count for nothing and are
-- deleted as the client submits again.
CREATE TABLE allowance_charges (
    client     TEXT NOT NULL,
    build_id   TEXT NOT NULL,
    charged_at TEXT NOT NULL
);
CREATE INDEX allowance_charges_by_client ON allowance_charges (client, charged_at);

-- Where each layer blob kiln pushed lives (the repository first pushed to), so a push of the
-- same layer to another repository mounts it instead of uploading it again — on any node.
CREATE TABLE layer_homes (
    digest     TEXT PRIMARY KEY NOT NULL,
    repository TEXT NOT NULL
);
