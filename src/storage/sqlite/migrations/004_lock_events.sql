-- The history: one row per thing that happened to a lock or a queue, written by triggers
-- in the same statement as the change, so that an event exists exactly when its change
-- committed, whichever process made it, and no code path can forget one.
--
-- The triggers read the statement's context through two functions every connection of the
-- store registers (sqlite-lock-store.ts): tracker_now(), the store's clock reading for the
-- current operation (the same instant its statements use), and tracker_context(key), what
-- the operation says about itself: 'release' = 'force-released' and 'reason' for a force
-- release, 'dequeue' = 'granted' while a waiter is being granted. A tool that writes to
-- `locks` or `waiters` without those functions fails: only Tracker writes there.
--
-- id: AUTOINCREMENT, never reused even when pruning empties the table. SQLite has one
--   writer at a time and rolls the counter back with its transaction, so ids are given in
--   commit order without gaps.
-- at: unix ms, store clock. created_at: the lock's acquire time (a waiter's enqueue time).
-- waiters: the service's live waiters right after the event.
-- held_ms: released / force-released / expired only (an expiry ends at expires_at).
-- reason: force-released: the operator's reason; dequeued: granted | left | abandoned.
CREATE TABLE lock_events (
  id            INTEGER PRIMARY KEY AUTOINCREMENT,
  at            INTEGER NOT NULL,
  type          TEXT    NOT NULL,
  lock_id       TEXT    NOT NULL,
  service       TEXT    NOT NULL,
  who           TEXT    NOT NULL,
  created_at    INTEGER NOT NULL,
  ttl_seconds   INTEGER,
  expires_at    INTEGER,
  fencing_token INTEGER,
  waiters       INTEGER NOT NULL,
  held_ms       INTEGER,
  reason        TEXT
) STRICT;

CREATE INDEX lock_events_service_id ON lock_events (service, id);
CREATE INDEX lock_events_who_id ON lock_events (who, id);
CREATE INDEX lock_events_at ON lock_events (at);

-- Events with ids at or below pruned_through were deleted by the retention sweep: a watcher
-- resuming from an older id is sent a fresh snapshot instead.
CREATE TABLE history_state (
  singleton      INTEGER NOT NULL PRIMARY KEY CHECK (singleton = 1),
  pruned_through INTEGER NOT NULL
) STRICT;
INSERT INTO history_state (singleton, pruned_through) VALUES (1, 0);

CREATE TRIGGER locks_event_acquired AFTER INSERT ON locks BEGIN
  INSERT INTO lock_events (at, type, lock_id, service, who, created_at, ttl_seconds, expires_at,
                           fencing_token, waiters)
  VALUES (tracker_now(), 'acquired', NEW.id, NEW.service, NEW.who, NEW.created_at, NEW.ttl_seconds,
          NEW.expires_at, NEW.fencing_token,
          (SELECT count(*) FROM waiters WHERE service = NEW.service AND alive_until > tracker_now()));
END;

-- A renewal sets the lease columns (whatever their values); nothing else updates a lock.
CREATE TRIGGER locks_event_renewed AFTER UPDATE OF ttl_seconds, expires_at ON locks BEGIN
  INSERT INTO lock_events (at, type, lock_id, service, who, created_at, ttl_seconds, expires_at,
                           fencing_token, waiters)
  VALUES (tracker_now(), 'renewed', NEW.id, NEW.service, NEW.who, NEW.created_at, NEW.ttl_seconds,
          NEW.expires_at, NEW.fencing_token,
          (SELECT count(*) FROM waiters WHERE service = NEW.service AND alive_until > tracker_now()));
END;

-- A row deleted once its lease ran out is an expiry, whoever deletes it (a sweep, or an
-- acquire taking the service over); otherwise a release, or a force release when the
-- operation says so.
CREATE TRIGGER locks_event_ended AFTER DELETE ON locks BEGIN
  INSERT INTO lock_events (at, type, lock_id, service, who, created_at, ttl_seconds, expires_at,
                           fencing_token, waiters, held_ms, reason)
  SELECT tracker_now(), ended.type, OLD.id, OLD.service, OLD.who, OLD.created_at, OLD.ttl_seconds,
         OLD.expires_at, OLD.fencing_token,
         (SELECT count(*) FROM waiters WHERE service = OLD.service AND alive_until > tracker_now()),
         CASE WHEN ended.type = 'expired' THEN OLD.expires_at ELSE tracker_now() END - OLD.created_at,
         CASE WHEN ended.type = 'force-released' THEN tracker_context('reason') END
  FROM (SELECT CASE WHEN OLD.expires_at <= tracker_now() THEN 'expired'
                    ELSE coalesce(tracker_context('release'), 'released') END AS type) AS ended;
END;

CREATE TRIGGER waiters_event_queued AFTER INSERT ON waiters BEGIN
  INSERT INTO lock_events (at, type, lock_id, service, who, created_at, ttl_seconds, waiters)
  VALUES (tracker_now(), 'queued', NEW.lock_id, NEW.service, NEW.who, NEW.since, NEW.ttl_seconds,
          (SELECT count(*) FROM waiters WHERE service = NEW.service AND alive_until > tracker_now()));
END;

CREATE TRIGGER waiters_event_dequeued AFTER DELETE ON waiters BEGIN
  INSERT INTO lock_events (at, type, lock_id, service, who, created_at, ttl_seconds, waiters, reason)
  VALUES (tracker_now(), 'dequeued', OLD.lock_id, OLD.service, OLD.who, OLD.since, OLD.ttl_seconds,
          (SELECT count(*) FROM waiters WHERE service = OLD.service AND alive_until > tracker_now()),
          CASE WHEN OLD.alive_until <= tracker_now() THEN 'abandoned'
               ELSE coalesce(tracker_context('dequeue'), 'left') END);
END;
