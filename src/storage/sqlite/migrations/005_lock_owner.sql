-- Authentication: the name of the token that took a lock (NULL when authentication was off).
-- Release and renew ask for that same token unless the caller is an admin. A waiter keeps
-- its request's owner (lock_owner: `owner` already names the waiting process) and hands it
-- to the lock it is granted. Events record it too.
ALTER TABLE locks ADD COLUMN owner TEXT;
ALTER TABLE waiters ADD COLUMN lock_owner TEXT;
ALTER TABLE lock_events ADD COLUMN owner TEXT;

-- The history triggers again, with the owner.
DROP TRIGGER locks_event_acquired;
DROP TRIGGER locks_event_renewed;
DROP TRIGGER locks_event_ended;
DROP TRIGGER waiters_event_queued;
DROP TRIGGER waiters_event_dequeued;

CREATE TRIGGER locks_event_acquired AFTER INSERT ON locks BEGIN
  INSERT INTO lock_events (at, type, lock_id, service, who, owner, created_at, ttl_seconds, expires_at,
                           fencing_token, waiters)
  VALUES (tracker_now(), 'acquired', NEW.id, NEW.service, NEW.who, NEW.owner, NEW.created_at,
          NEW.ttl_seconds, NEW.expires_at, NEW.fencing_token,
          (SELECT count(*) FROM waiters WHERE service = NEW.service AND alive_until > tracker_now()));
END;

-- A renewal sets the lease columns (whatever their values); nothing else updates a lock.
CREATE TRIGGER locks_event_renewed AFTER UPDATE OF ttl_seconds, expires_at ON locks BEGIN
  INSERT INTO lock_events (at, type, lock_id, service, who, owner, created_at, ttl_seconds, expires_at,
                           fencing_token, waiters)
  VALUES (tracker_now(), 'renewed', NEW.id, NEW.service, NEW.who, NEW.owner, NEW.created_at,
          NEW.ttl_seconds, NEW.expires_at, NEW.fencing_token,
          (SELECT count(*) FROM waiters WHERE service = NEW.service AND alive_until > tracker_now()));
END;

CREATE TRIGGER locks_event_ended AFTER DELETE ON locks BEGIN
  INSERT INTO lock_events (at, type, lock_id, service, who, owner, created_at, ttl_seconds, expires_at,
                           fencing_token, waiters, held_ms, reason)
  SELECT tracker_now(), ended.type, OLD.id, OLD.service, OLD.who, OLD.owner, OLD.created_at,
         OLD.ttl_seconds, OLD.expires_at, OLD.fencing_token,
         (SELECT count(*) FROM waiters WHERE service = OLD.service AND alive_until > tracker_now()),
         CASE WHEN ended.type = 'expired' THEN OLD.expires_at ELSE tracker_now() END - OLD.created_at,
         CASE WHEN ended.type = 'force-released' THEN tracker_context('reason') END
  FROM (SELECT CASE WHEN OLD.expires_at <= tracker_now() THEN 'expired'
                    ELSE coalesce(tracker_context('release'), 'released') END AS type) AS ended;
END;

CREATE TRIGGER waiters_event_queued AFTER INSERT ON waiters BEGIN
  INSERT INTO lock_events (at, type, lock_id, service, who, owner, created_at, ttl_seconds, waiters)
  VALUES (tracker_now(), 'queued', NEW.lock_id, NEW.service, NEW.who, NEW.lock_owner, NEW.since,
          NEW.ttl_seconds,
          (SELECT count(*) FROM waiters WHERE service = NEW.service AND alive_until > tracker_now()));
END;

CREATE TRIGGER waiters_event_dequeued AFTER DELETE ON waiters BEGIN
  INSERT INTO lock_events (at, type, lock_id, service, who, owner, created_at, ttl_seconds, waiters, reason)
  VALUES (tracker_now(), 'dequeued', OLD.lock_id, OLD.service, OLD.who, OLD.lock_owner, OLD.since,
          OLD.ttl_seconds,
          (SELECT count(*) FROM waiters WHERE service = OLD.service AND alive_until > tracker_now()),
          CASE WHEN OLD.alive_until <= tracker_now() THEN 'abandoned'
               ELSE coalesce(tracker_context('dequeue'), 'left') END);
END;
