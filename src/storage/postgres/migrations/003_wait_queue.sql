-- The fair wait queue: one row per request waiting for a held service.
--
-- ticket: arrival order across every replica on this database (a sequence, never one
--   process's memory). Enqueues of one service run while holding its `services` row lock,
--   so within a service tickets also commit in ticket order.
-- lock_id: the id the lock gets when this waiter is granted (the request's own id).
-- ttl_seconds: the lease the lock gets at grant time (NULL: no TTL); expires_at is
--   computed from the moment of the grant, not of the enqueue.
-- owner: the replica that waits. alive_until is pushed forward by that replica's
--   heartbeat; a waiter whose alive_until is at or before tracker_now() is dead (its replica
--   stopped) and is skipped and deleted by whoever grants next.
CREATE TABLE waiters (
  ticket      bigserial   PRIMARY KEY,
  service     text        NOT NULL,
  who         text        NOT NULL,
  ttl_seconds int         NULL,
  lock_id     uuid        NOT NULL UNIQUE,
  owner       text        NOT NULL,
  since       timestamptz NOT NULL,
  alive_until timestamptz NOT NULL
);

-- The head of a service's queue, and its length.
CREATE INDEX waiters_service_ticket ON waiters (service, ticket);
-- Heartbeats.
CREATE INDEX waiters_owner ON waiters (owner);
