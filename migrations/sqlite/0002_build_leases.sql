-- Workers claim builds with a lease: `worker` holds the build while `lease_until` (RFC 3339 UTC
-- text, like every time here) lies ahead; the worker renews it while it builds. A BUILDING build
-- whose lease has run out belongs to a crashed worker and may be claimed again.
ALTER TABLE builds ADD COLUMN worker TEXT;
ALTER TABLE builds ADD COLUMN lease_until TEXT;

-- Claiming looks for the oldest claimable build.
CREATE INDEX builds_by_status ON builds (status, created_at);
