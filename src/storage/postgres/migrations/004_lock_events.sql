-- The history: one row per thing that happened to a lock or a queue, written by triggers
-- in the same transaction as the change, so that an event exists exactly when its change
-- committed, whichever replica made it, and no code path can forget one.
--
-- id: from a sequence, so ids are handed out in insert order, not commit order: a reader
--   that saw id 7 may later see id 6 commit. Readers deal with it (queries.ts, EVENTS_AFTER):
--   the triggers run after the lock or waiter row is written, so every transaction holding
--   an event id already has a transaction id, and a reader waits for the transactions that
--   were running when it met a gap before going past it.
-- at: when recorded, by tracker_now(). created_at: the lock's acquire time (a waiter's
--   enqueue time). waiters: the service's live waiters right after the event (AFTER
--   triggers see the whole statement's changes).
-- held_ms: released / force-released / expired only (an expiry ends at expires_at).
-- reason: force-released: the operator's reason; dequeued: granted | left | abandoned.
CREATE TABLE lock_events (
  id            bigserial   PRIMARY KEY,
  at            timestamptz NOT NULL,
  type          text        NOT NULL,
  lock_id       uuid        NOT NULL,
  service       text        NOT NULL,
  who           text        NOT NULL,
  created_at    timestamptz NOT NULL,
  ttl_seconds   int         NULL,
  expires_at    timestamptz NULL,
  fencing_token bigint      NULL,
  waiters       int         NOT NULL,
  held_ms       bigint      NULL,
  reason        text        NULL
);

CREATE INDEX lock_events_service_id ON lock_events (service, id);
CREATE INDEX lock_events_who_id ON lock_events (who, id);
-- Rows are appended in time order, so a BRIN index serves the retention sweep and the
-- since/until filters at almost no cost per insert.
CREATE INDEX lock_events_at ON lock_events USING brin (at);

-- Events with ids at or below pruned_through were deleted by the retention sweep: a watcher
-- resuming from an older id is sent a fresh snapshot instead.
CREATE TABLE history_state (
  singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  pruned_through bigint  NOT NULL
);
INSERT INTO history_state (pruned_through) VALUES (0);

-- A force release says so for its own transaction only:
--   set_config('tracker.release', 'force-released', true), set_config('tracker.reason', ...).
CREATE FUNCTION tracker_record_lock_event() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  t timestamptz := tracker_now();
  row_ locks%ROWTYPE;
  kind text;
  live_waiters int;
BEGIN
  row_ := CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
  SELECT count(*) INTO live_waiters FROM waiters WHERE service = row_.service AND alive_until > t;
  IF TG_OP = 'UPDATE' AND OLD.id <> NEW.id THEN
    -- An acquire took over the row of an expired lock (ACQUIRE's ON CONFLICT DO UPDATE).
    INSERT INTO lock_events (at, type, lock_id, service, who, created_at, ttl_seconds, expires_at,
                             fencing_token, waiters, held_ms)
    VALUES (t, 'expired', OLD.id, OLD.service, OLD.who, OLD.created_at, OLD.ttl_seconds, OLD.expires_at,
            OLD.fencing_token, live_waiters,
            floor(extract(epoch FROM OLD.expires_at - OLD.created_at) * 1000)::bigint);
  END IF;
  IF TG_OP = 'DELETE' THEN
    kind := CASE WHEN OLD.expires_at <= t THEN 'expired'
                 ELSE coalesce(nullif(current_setting('tracker.release', true), ''), 'released') END;
    INSERT INTO lock_events (at, type, lock_id, service, who, created_at, ttl_seconds, expires_at,
                             fencing_token, waiters, held_ms, reason)
    VALUES (t, kind, OLD.id, OLD.service, OLD.who, OLD.created_at, OLD.ttl_seconds, OLD.expires_at,
            OLD.fencing_token, live_waiters,
            floor(extract(epoch FROM CASE WHEN kind = 'expired' THEN OLD.expires_at ELSE t END
                                     - OLD.created_at) * 1000)::bigint,
            CASE WHEN kind = 'force-released' THEN nullif(current_setting('tracker.reason', true), '') END);
  ELSE
    INSERT INTO lock_events (at, type, lock_id, service, who, created_at, ttl_seconds, expires_at,
                             fencing_token, waiters)
    VALUES (t, CASE WHEN TG_OP = 'UPDATE' AND OLD.id = NEW.id THEN 'renewed' ELSE 'acquired' END,
            NEW.id, NEW.service, NEW.who, NEW.created_at, NEW.ttl_seconds, NEW.expires_at,
            NEW.fencing_token, live_waiters);
  END IF;
  RETURN NULL;
END $$;

-- The triggers may fire in sessions whose search_path does not name this schema (an
-- operator's psql, naming tables with their schema): they resolve their own names in the
-- schema they were created in.
ALTER FUNCTION tracker_record_lock_event() SET search_path FROM CURRENT;

CREATE TRIGGER locks_record_event AFTER INSERT OR UPDATE OR DELETE ON locks
  FOR EACH ROW EXECUTE FUNCTION tracker_record_lock_event();

-- A waiter that leaves while its lock exists was granted (the grant inserts the lock in the
-- same statement, and AFTER triggers see it); one whose replica stopped its heartbeat was
-- abandoned; any other left (its caller timed out, hung up or was cancelled).
CREATE FUNCTION tracker_record_waiter_event() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  t timestamptz := tracker_now();
  row_ waiters%ROWTYPE;
BEGIN
  row_ := CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
  INSERT INTO lock_events (at, type, lock_id, service, who, created_at, ttl_seconds, waiters, reason)
  VALUES (t, CASE WHEN TG_OP = 'DELETE' THEN 'dequeued' ELSE 'queued' END,
          row_.lock_id, row_.service, row_.who, row_.since, row_.ttl_seconds,
          (SELECT count(*) FROM waiters WHERE service = row_.service AND alive_until > t),
          CASE WHEN TG_OP = 'INSERT' THEN NULL
               WHEN EXISTS (SELECT FROM locks WHERE id = OLD.lock_id) THEN 'granted'
               WHEN OLD.alive_until <= t THEN 'abandoned'
               ELSE 'left' END);
  RETURN NULL;
END $$;

ALTER FUNCTION tracker_record_waiter_event() SET search_path FROM CURRENT;

CREATE TRIGGER waiters_record_event AFTER INSERT OR DELETE ON waiters
  FOR EACH ROW EXECUTE FUNCTION tracker_record_waiter_event();
