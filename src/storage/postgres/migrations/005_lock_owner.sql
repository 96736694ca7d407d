-- Authentication: the name of the token that took a lock (NULL when authentication was off).
-- Release and renew ask for that same token unless the caller is an admin. A waiter keeps
-- its request's owner (lock_owner: `owner` already names the waiting replica) and hands it
-- to the lock it is granted. Events record it too.
ALTER TABLE locks ADD COLUMN owner text NULL;
ALTER TABLE waiters ADD COLUMN lock_owner text NULL;
ALTER TABLE lock_events ADD COLUMN owner text NULL;

-- The history triggers again, with the owner (same logic as migration 004).
CREATE OR REPLACE FUNCTION tracker_record_lock_event() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  t timestamptz := tracker_now();
  row_ locks%ROWTYPE;
  kind text;
  live_waiters int;
BEGIN
  row_ := CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
  SELECT count(*) INTO live_waiters FROM waiters WHERE service = row_.service AND alive_until > t;
  IF TG_OP = 'UPDATE' AND OLD.id <> NEW.id THEN
    INSERT INTO lock_events (at, type, lock_id, service, who, owner, created_at, ttl_seconds, expires_at,
                             fencing_token, waiters, held_ms)
    VALUES (t, 'expired', OLD.id, OLD.service, OLD.who, OLD.owner, OLD.created_at, OLD.ttl_seconds,
            OLD.expires_at, OLD.fencing_token, live_waiters,
            floor(extract(epoch FROM OLD.expires_at - OLD.created_at) * 1000)::bigint);
  END IF;
  IF TG_OP = 'DELETE' THEN
    kind := CASE WHEN OLD.expires_at <= t THEN 'expired'
                 ELSE coalesce(nullif(current_setting('tracker.release', true), ''), 'released') END;
    INSERT INTO lock_events (at, type, lock_id, service, who, owner, created_at, ttl_seconds, expires_at,
                             fencing_token, waiters, held_ms, reason)
    VALUES (t, kind, OLD.id, OLD.service, OLD.who, OLD.owner, OLD.created_at, OLD.ttl_seconds,
            OLD.expires_at, OLD.fencing_token, live_waiters,
            floor(extract(epoch FROM CASE WHEN kind = 'expired' THEN OLD.expires_at ELSE t END
                                     - OLD.created_at) * 1000)::bigint,
            CASE WHEN kind = 'force-released' THEN nullif(current_setting('tracker.reason', true), '') END);
  ELSE
    INSERT INTO lock_events (at, type, lock_id, service, who, owner, created_at, ttl_seconds, expires_at,
                             fencing_token, waiters)
    VALUES (t, CASE WHEN TG_OP = 'UPDATE' AND OLD.id = NEW.id THEN 'renewed' ELSE 'acquired' END,
            NEW.id, NEW.service, NEW.who, NEW.owner, NEW.created_at, NEW.ttl_seconds, NEW.expires_at,
            NEW.fencing_token, live_waiters);
  END IF;
  RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION tracker_record_waiter_event() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  t timestamptz := tracker_now();
  row_ waiters%ROWTYPE;
BEGIN
  row_ := CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
  INSERT INTO lock_events (at, type, lock_id, service, who, owner, created_at, ttl_seconds, waiters, reason)
  VALUES (t, CASE WHEN TG_OP = 'DELETE' THEN 'dequeued' ELSE 'queued' END,
          row_.lock_id, row_.service, row_.who, row_.lock_owner, row_.since, row_.ttl_seconds,
          (SELECT count(*) FROM waiters WHERE service = row_.service AND alive_until > t),
          CASE WHEN TG_OP = 'INSERT' THEN NULL
               WHEN EXISTS (SELECT FROM locks WHERE id = OLD.lock_id) THEN 'granted'
               WHEN OLD.alive_until <= t THEN 'abandoned'
               ELSE 'left' END);
  RETURN NULL;
END $$;

-- CREATE OR REPLACE drops the functions' settings: resolve names in this schema again.
ALTER FUNCTION tracker_record_lock_event() SET search_path FROM CURRENT;
ALTER FUNCTION tracker_record_waiter_event() SET search_path FROM CURRENT;
