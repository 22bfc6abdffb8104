-- Leases serialise continuations of one session across instances; updated_at drives
-- retention; store_probe lets readiness check that the store takes writes again.
ALTER TABLE sessions ADD COLUMN updated_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN lease_token TEXT;
ALTER TABLE sessions ADD COLUMN lease_until_ms BIGINT NOT NULL DEFAULT 0;
UPDATE sessions SET updated_at = created_at;
CREATE INDEX sessions_by_activity ON sessions (updated_at);

CREATE TABLE store_probe (
    id      BIGINT PRIMARY KEY,
    payload TEXT NOT NULL
);
