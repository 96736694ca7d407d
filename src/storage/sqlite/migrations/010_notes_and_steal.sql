-- Notes and links: why a lock is held and where to look. A waiting request carries its own
-- into the lock it is granted; the history records them with every event (as they were when
-- it was recorded), and a change of the note alone records `noted`.
--
-- Steal: an admin ends a holder's lock and takes the service in the same transaction; the
-- ended lock's event is `stolen`, with the reason and who took it (by_lock_id, by_who,
-- by_owner), all from the statement's context (tracker_context, as for a force release).
ALTER TABLE locks ADD COLUMN note TEXT;
ALTER TABLE locks ADD COLUMN link TEXT;
ALTER TABLE waiters ADD COLUMN note TEXT;
ALTER TABLE waiters ADD COLUMN link TEXT;
ALTER TABLE lock_events ADD COLUMN note TEXT;
ALTER TABLE lock_events ADD COLUMN link TEXT;
ALTER TABLE lock_events ADD COLUMN by_lock_id TEXT;
ALTER TABLE lock_events ADD COLUMN by_who TEXT;
ALTER TABLE lock_events ADD COLUMN by_owner TEXT;

-- The history triggers of migration 008, with the note and the link.
DROP TRIGGER locks_event_acquired;
DROP TRIGGER locks_event_renewed;
DROP TRIGGER locks_event_ended;
DROP TRIGGER waiters_event_queued;
DROP TRIGGER waiters_event_dequeued;

CREATE TRIGGER locks_event_acquired AFTER INSERT ON locks BEGIN
  INSERT INTO lock_events (at, type, lock_id, service, who, owner, created_at, ttl_seconds, expires_at,
                           fencing_token, waiters, group_id, mode, max_holders, note, link)
  VALUES (tracker_now(), 'acquired', NEW.id, NEW.service, NEW.who, NEW.owner, NEW.created_at,
          NEW.ttl_seconds, NEW.expires_at, NEW.fencing_token,
          (SELECT count(*) FROM waiter_claims c JOIN waiters w ON w.ticket = c.ticket
           WHERE c.service = NEW.service AND w.alive_until > tracker_now()),
          NEW.group_id, NEW.mode, NEW.max_holders, NEW.note, NEW.link);
END;

CREATE TRIGGER locks_event_renewed AFTER UPDATE OF ttl_seconds, expires_at ON locks BEGIN
  INSERT INTO lock_events (at, type, lock_id, service, who, owner, created_at, ttl_seconds, expires_at,
                           fencing_token, waiters, group_id, mode, max_holders, note, link)
  VALUES (tracker_now(), 'renewed', NEW.id, NEW.service, NEW.who, NEW.owner, NEW.created_at,
          NEW.ttl_seconds, NEW.expires_at, NEW.fencing_token,
          (SELECT count(*) FROM waiter_claims c JOIN waiters w ON w.ticket = c.ticket
           WHERE c.service = NEW.service AND w.alive_until > tracker_now()),
          NEW.group_id, NEW.mode, NEW.max_holders, NEW.note, NEW.link);
END;

-- `IS NOT`: a note set, changed or cleared; an UPDATE that writes the same note records nothing.
CREATE TRIGGER locks_event_noted AFTER UPDATE OF note ON locks WHEN NEW.note IS NOT OLD.note BEGIN
  INSERT INTO lock_events (at, type, lock_id, service, who, owner, created_at, ttl_seconds, expires_at,
                           fencing_token, waiters, group_id, mode, max_holders, note, link)
  VALUES (tracker_now(), 'noted', NEW.id, NEW.service, NEW.who, NEW.owner, NEW.created_at,
          NEW.ttl_seconds, NEW.expires_at, NEW.fencing_token,
          (SELECT count(*) FROM waiter_claims c JOIN waiters w ON w.ticket = c.ticket
           WHERE c.service = NEW.service AND w.alive_until > tracker_now()),
          NEW.group_id, NEW.mode, NEW.max_holders, NEW.note, NEW.link);
END;

CREATE TRIGGER locks_event_ended AFTER DELETE ON locks BEGIN
  INSERT INTO lock_events (at, type, lock_id, service, who, owner, created_at, ttl_seconds, expires_at,
                           fencing_token, waiters, held_ms, reason, group_id, mode, max_holders, note, link,
                           by_lock_id, by_who, by_owner)
  SELECT tracker_now(), ended.type, OLD.id, OLD.service, OLD.who, OLD.owner, OLD.created_at,
         OLD.ttl_seconds, OLD.expires_at, OLD.fencing_token,
         (SELECT count(*) FROM waiter_claims c JOIN waiters w ON w.ticket = c.ticket
          WHERE c.service = OLD.service AND w.alive_until > tracker_now()),
         CASE WHEN ended.type = 'expired' THEN OLD.expires_at ELSE tracker_now() END - OLD.created_at,
         CASE WHEN ended.type IN ('force-released', 'stolen') THEN tracker_context('reason') END,
         OLD.group_id, OLD.mode, OLD.max_holders, OLD.note, OLD.link,
         CASE WHEN ended.type = 'stolen' THEN tracker_context('by_lock_id') END,
         CASE WHEN ended.type = 'stolen' THEN tracker_context('by_who') END,
         CASE WHEN ended.type = 'stolen' THEN tracker_context('by_owner') END
  FROM (SELECT CASE WHEN OLD.expires_at <= tracker_now() THEN 'expired'
                    ELSE coalesce(tracker_context('release'), 'released') END AS type) AS ended;
  UPDATE resources SET released_at = tracker_now() WHERE name = OLD.service;
END;

CREATE TRIGGER waiters_event_queued AFTER INSERT ON waiter_claims WHEN NEW.idx = 0 BEGIN
  INSERT INTO lock_events (at, type, lock_id, service, who, owner, created_at, ttl_seconds, waiters,
                           group_id, mode, label, note, link)
  SELECT tracker_now(), 'queued', w.lock_id, w.service, w.who, w.lock_owner, w.since, w.ttl_seconds,
         (SELECT count(*) FROM waiter_claims c JOIN waiters x ON x.ticket = c.ticket
          WHERE c.service = w.service AND x.alive_until > tracker_now()),
         CASE WHEN w.is_group = 1 THEN w.lock_id END, w.mode, w.label, w.note, w.link
  FROM waiters w WHERE w.ticket = NEW.ticket;
END;

CREATE TRIGGER waiters_event_dequeued AFTER DELETE ON waiters BEGIN
  DELETE FROM waiter_claims WHERE ticket = OLD.ticket;
  INSERT INTO lock_events (at, type, lock_id, service, who, owner, created_at, ttl_seconds, waiters, reason,
                           group_id, mode, label, note, link)
  VALUES (tracker_now(), 'dequeued', OLD.lock_id, OLD.service, OLD.who, OLD.lock_owner, OLD.since,
          OLD.ttl_seconds,
          (SELECT count(*) FROM waiter_claims c JOIN waiters w ON w.ticket = c.ticket
           WHERE c.service = OLD.service AND w.alive_until > tracker_now()),
          CASE WHEN OLD.alive_until <= tracker_now() THEN 'abandoned'
               ELSE coalesce(tracker_context('dequeue'), 'left') END,
          CASE WHEN OLD.is_group = 1 THEN OLD.lock_id END, OLD.mode, OLD.label, OLD.note, OLD.link);
END;
