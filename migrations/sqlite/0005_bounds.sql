-- Who submitted a build, for cancelling and for the caps on queued builds: `owner_token` is
-- sha256 (lowercase hex) of the token the request came with (NULL without one), so the
-- database never holds a usable token; `submitter_address` is the client's IP address (NULL
-- when unknown). `claims` counts how often a worker took the build: more than one means
-- earlier workers stopped (a crash, a lost lease), and kiln gives up after a set number.
ALTER TABLE builds ADD COLUMN owner_token TEXT;
ALTER TABLE builds ADD COLUMN submitter_address TEXT;
ALTER TABLE builds ADD COLUMN claims INTEGER NOT NULL DEFAULT 0;

-- The pruning pass deletes request records and logs by age.
CREATE INDEX container_requests_by_time ON container_requests (created_at);
CREATE INDEX builds_by_finished ON builds (finished_at);
