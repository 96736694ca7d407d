-- Leases (TTL, expiry, renewal) and fencing tokens.

-- The store's clock. Every instant the store reads or writes (createdAt, expiresAt, "is this
-- lock expired?", renewal) comes from this one function, never from the replica's Date.now()
-- and never from now() written directly in a query:
-- - In production it is the database's now(), so every replica on this database agrees on
--   one clock, whatever their own clocks say. now() is the transaction's start: within one
--   statement every call gives the same instant, so "expired?" and "expires at" never
--   disagree, and an acquire that waited for a row lock judges expiry by the moment it
--   started (an instant early, never late: it can only see a lease as less expired).
-- - Tests replace this function, in their own schema only, by one that reads an offset from
--   a test-only table (test/support/postgres.ts), to move the store's clock forward without
--   sleeping and without touching the process clock. Migrations never create that table.
-- It is created in the store's schema (the first of the search_path); queries call it
-- unqualified, so each schema has its own. STABLE: it may be inlined and called per row.
CREATE FUNCTION tracker_now() RETURNS timestamptz
  LANGUAGE sql STABLE PARALLEL SAFE
  AS 'SELECT now()';

-- ttl_seconds: the lease the lock was taken or last renewed with; NULL: no TTL.
-- expires_at: when the lease runs out (NULL: never). A row with expires_at <= tracker_now()
--   is not a lock any more, whether or not its row has been deleted yet: every query
--   filters it out, and an acquire takes the service over in the same statement.
-- fencing_token: the services counter's value when this lock was acquired.
ALTER TABLE locks
  ADD COLUMN ttl_seconds   int         NULL,
  ADD COLUMN expires_at    timestamptz NULL,
  ADD COLUMN fencing_token bigint      NOT NULL DEFAULT 0;

-- One row per service ever acquired: its fencing counter, which only grows. It is a table
-- of its own so that deleting a lock (release, expiry, a sweeper) never resets it, and it
-- lives in the database, so restarts and replicas share it.
CREATE TABLE services (
  service    text   PRIMARY KEY,
  last_token bigint NOT NULL
);

-- Locks held across the upgrade had no token: give each token 1 and start its service's
-- counter there, so that every held lock has a positive token and the next is greater.
INSERT INTO services (service, last_token) SELECT service, 1 FROM locks;
UPDATE locks SET fencing_token = 1;

-- For a sweeper that deletes expired rows (and records their expiry); leases only.
CREATE INDEX locks_expires_at ON locks (expires_at) WHERE expires_at IS NOT NULL;
