-- Leases and fencing tokens.
-- ttl_seconds and expires_at are NULL for a lock that never expires. An expired row may
-- linger until an acquire of its service (or a sweeper) deletes it: every read filters on
-- expires_at, so correctness never waits for the deletion.
ALTER TABLE locks ADD COLUMN ttl_seconds INTEGER;
-- Unix epoch milliseconds from the store's clock.
ALTER TABLE locks ADD COLUMN expires_at INTEGER;
ALTER TABLE locks ADD COLUMN fencing_token INTEGER NOT NULL DEFAULT 0;

-- The per-service fencing counter. Deleting a lock never touches it, so tokens keep
-- growing across releases, expiries and restarts.
CREATE TABLE services (
  service    TEXT    NOT NULL PRIMARY KEY,
  last_token INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- Every new lock records its token as the service's last one, in the same statement as
-- the INSERT (a trigger is part of its statement), so a free service still costs one
-- statement and a refused INSERT records nothing.
CREATE TRIGGER locks_record_fencing_token AFTER INSERT ON locks BEGIN
  INSERT INTO services (service, last_token) VALUES (NEW.service, NEW.fencing_token)
  ON CONFLICT (service) DO UPDATE SET last_token = excluded.last_token;
END;

-- Locks held across this upgrade get token 1 and their service's counter starts there, so
-- every held lock has a positive token and the next acquire gets 2 (as on PostgreSQL).
UPDATE locks SET fencing_token = 1;
INSERT INTO services (service, last_token) SELECT service, 1 FROM locks;

CREATE INDEX locks_expires_at ON locks (expires_at) WHERE expires_at IS NOT NULL;
