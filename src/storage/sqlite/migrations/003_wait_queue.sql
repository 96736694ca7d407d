-- The fair wait queue. A waiter is a request queued for a held service; its ticket is the
-- arrival order across every process sharing the file (AUTOINCREMENT: never reused). When
-- granted, the lock row gets the waiter's lock_id, the id of the original request.
-- A waiter is live while alive_until (unix ms) is ahead: its owner (the process that waits)
-- pushes it forward with a heartbeat, so a crashed process's waiters stop blocking the line.
CREATE TABLE waiters (
  ticket      INTEGER PRIMARY KEY AUTOINCREMENT,
  service     TEXT    NOT NULL,
  who         TEXT    NOT NULL,
  ttl_seconds INTEGER,
  lock_id     TEXT    NOT NULL UNIQUE,
  owner       TEXT    NOT NULL,
  since       INTEGER NOT NULL,
  alive_until INTEGER NOT NULL
) STRICT;

CREATE INDEX waiters_service_ticket ON waiters (service, ticket);
CREATE INDEX waiters_owner ON waiters (owner);
