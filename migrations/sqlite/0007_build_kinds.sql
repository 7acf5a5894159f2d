-- What kind of build a row is (`native`, `dockerfile` or `definition`), so the build's job is
-- read back typed and workers can claim only the kinds they build. Rows from before this column
-- are given the kind their request's JSON names: a `containerfile` key made a Dockerfile build,
-- a `definition` key a definition file's, anything else a package request.
ALTER TABLE builds ADD COLUMN kind TEXT NOT NULL DEFAULT 'native'
    CHECK (kind IN ('native', 'dockerfile', 'definition'));
UPDATE builds SET kind = 'dockerfile'
    WHERE json_valid(request) AND json_type(request, '$.containerfile') IS NOT NULL;
UPDATE builds SET kind = 'definition'
    WHERE kind = 'native' AND json_valid(request)
      AND json_type(request, '$.definition') IS NOT NULL;

-- Claiming looks for the oldest claimable build of the kinds a worker takes.
CREATE INDEX builds_by_kind ON builds (kind, status, created_at);
