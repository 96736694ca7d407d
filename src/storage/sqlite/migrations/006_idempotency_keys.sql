-- Idempotent acquires: a client's Idempotency-Key, scoped to its caller, written in the same
-- transaction as the acquire it names. lock_id is the id the lock gets (or got, or the
-- waiting request's). granted: a lock was granted under the key once (it is never granted
-- again). attempt: the request that last presented the key; a request that was overtaken by
-- a retry of itself neither leaves the queue nor releases the lock on its way out.
CREATE TABLE idempotency_keys (
  scope       TEXT    NOT NULL,
  key         TEXT    NOT NULL,
  fingerprint TEXT    NOT NULL,
  lock_id     TEXT    NOT NULL UNIQUE,
  service     TEXT    NOT NULL,
  attempt     TEXT    NOT NULL,
  granted     INTEGER NOT NULL DEFAULT 0,
  created_at  INTEGER NOT NULL,
  PRIMARY KEY (scope, key)
) STRICT;

CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
