-- Idempotent acquires: a client's Idempotency-Key, scoped to its caller, written in the same
-- transaction as the acquire it names. lock_id is the id the lock gets (or got, or the
-- waiting request's). granted: a lock was granted under the key once (it is never granted
-- again). attempt: the request that last presented the key; a request that was overtaken by
-- a retry of itself (on any replica) neither leaves the queue nor releases the lock on its
-- way out.
CREATE TABLE idempotency_keys (
  scope       text        NOT NULL,
  key         text        NOT NULL,
  fingerprint text        NOT NULL,
  lock_id     uuid        NOT NULL UNIQUE,
  service     text        NOT NULL,
  attempt     text        NOT NULL,
  granted     boolean     NOT NULL DEFAULT false,
  created_at  timestamptz NOT NULL,
  PRIMARY KEY (scope, key)
);

CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
