-- Notes and links: why a lock is held and where to look. A waiting request carries its own
-- into the lock it is granted (tracker_grant); the history records them with every event
-- (as they were when it was recorded), and a change of the note alone records `noted`
-- (a trigger of its own, on UPDATE OF note, so that a renewal never reads as one).
--
-- Steal: an admin ends a holder's lock and takes the service in the same transaction; the
-- ended lock's event is `stolen`, with the reason and who took it (by_lock_id, by_who,
-- by_owner), from the transaction's settings (tracker.release = 'stolen', tracker.reason,
-- tracker.by_lock_id, tracker.by_who, tracker.by_owner), as for a force release.
ALTER TABLE locks ADD COLUMN note text, ADD COLUMN link text;
ALTER TABLE waiters ADD COLUMN note text, ADD COLUMN link text;
ALTER TABLE lock_events ADD COLUMN note text, ADD COLUMN link text,
  ADD COLUMN by_lock_id uuid, ADD COLUMN by_who text, ADD COLUMN by_owner text;

-- Migration 008's, with the note and the link.
CREATE OR REPLACE FUNCTION tracker_lock_json(l locks) RETURNS json LANGUAGE plpgsql STABLE AS $$
BEGIN
  RETURN json_build_object(
    'id', l.id, 'service', l.service, 'who', l.who,
    'created_ms', floor(extract(epoch FROM l.created_at) * 1000)::int8,
    'ttl_seconds', l.ttl_seconds,
    'expires_ms', floor(extract(epoch FROM l.expires_at) * 1000)::int8,
    'fencing_token', l.fencing_token, 'owner', l.owner,
    'waiters', tracker_waiting(l.service),
    'limit', l.max_holders, 'mode', l.mode, 'group_id', l.group_id,
    'note', l.note, 'link', l.link,
    'resource', (SELECT json_build_object('name', r.name, 'labels', r.labels, 'properties', r.properties)
                 FROM resources r WHERE r.name = l.service));
END $$;

CREATE OR REPLACE FUNCTION tracker_record_lock_event() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  t timestamptz := tracker_now();
  row_ locks%ROWTYPE;
  kind text;
  live_waiters int;
BEGIN
  row_ := CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
  live_waiters := tracker_waiting(row_.service);
  IF TG_OP = 'DELETE' THEN
    kind := CASE WHEN OLD.expires_at <= t THEN 'expired'
                 ELSE coalesce(nullif(current_setting('tracker.release', true), ''), 'released') END;
    INSERT INTO lock_events (at, type, lock_id, service, who, owner, created_at, ttl_seconds, expires_at,
                             fencing_token, waiters, held_ms, reason, group_id, mode, max_holders, note, link,
                             by_lock_id, by_who, by_owner)
    VALUES (t, kind, OLD.id, OLD.service, OLD.who, OLD.owner, OLD.created_at, OLD.ttl_seconds,
            OLD.expires_at, OLD.fencing_token, live_waiters,
            floor(extract(epoch FROM CASE WHEN kind = 'expired' THEN OLD.expires_at ELSE t END
                                     - OLD.created_at) * 1000)::bigint,
            CASE WHEN kind IN ('force-released', 'stolen')
                 THEN nullif(current_setting('tracker.reason', true), '') END,
            OLD.group_id, OLD.mode, OLD.max_holders, OLD.note, OLD.link,
            CASE WHEN kind = 'stolen' THEN nullif(current_setting('tracker.by_lock_id', true), '')::uuid END,
            CASE WHEN kind = 'stolen' THEN nullif(current_setting('tracker.by_who', true), '') END,
            CASE WHEN kind = 'stolen' THEN nullif(current_setting('tracker.by_owner', true), '') END);
    UPDATE resources SET released_at = t WHERE name = OLD.service;
  ELSE
    INSERT INTO lock_events (at, type, lock_id, service, who, owner, created_at, ttl_seconds, expires_at,
                             fencing_token, waiters, group_id, mode, max_holders, note, link)
    VALUES (t, CASE WHEN TG_OP = 'INSERT' THEN 'acquired'
                    WHEN TG_ARGV[0] = 'noted' THEN 'noted' ELSE 'renewed' END,
            NEW.id, NEW.service, NEW.who, NEW.owner, NEW.created_at, NEW.ttl_seconds, NEW.expires_at,
            NEW.fencing_token, live_waiters, NEW.group_id, NEW.mode, NEW.max_holders, NEW.note, NEW.link);
  END IF;
  RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION tracker_record_waiter_event() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  t timestamptz := tracker_now();
  row_ waiters%ROWTYPE;
BEGIN
  row_ := CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
  INSERT INTO lock_events (at, type, lock_id, service, who, owner, created_at, ttl_seconds, waiters, reason,
                           group_id, mode, label, note, link)
  VALUES (t, CASE WHEN TG_OP = 'DELETE' THEN 'dequeued' ELSE 'queued' END,
          row_.lock_id, row_.service, row_.who, row_.lock_owner, row_.since, row_.ttl_seconds,
          tracker_waiting(row_.service),
          CASE WHEN TG_OP = 'INSERT' THEN NULL
               WHEN OLD.alive_until <= t THEN 'abandoned'
               ELSE coalesce(nullif(current_setting('tracker.dequeue', true), ''), 'left') END,
          CASE WHEN row_.is_group THEN row_.lock_id END, row_.mode, row_.label, row_.note, row_.link);
  RETURN NULL;
END $$;

-- CREATE OR REPLACE drops the functions' settings: resolve names in this schema again.
ALTER FUNCTION tracker_record_lock_event() SET search_path FROM CURRENT;
ALTER FUNCTION tracker_record_waiter_event() SET search_path FROM CURRENT;

-- A note set, changed or cleared (an UPDATE writing the same note records nothing).
CREATE TRIGGER locks_record_noted AFTER UPDATE OF note ON locks
  FOR EACH ROW WHEN (OLD.note IS DISTINCT FROM NEW.note)
  EXECUTE FUNCTION tracker_record_lock_event('noted');

-- Migration 008's, with the note and the link: a waiter's from its row, the arriving
-- request's from its grant (`note`, `link`).
CREATE OR REPLACE FUNCTION tracker_grant(p_grants json) RETURNS json LANGUAGE plpgsql AS $$
DECLARE
  t timestamptz := tracker_now();
  g json;
  p json;
  req record;
  token bigint;
  lock_id uuid;
  made json[];
  done json[] := '{}';
  member_ int;
  found_ boolean;
BEGIN
  FOR g IN SELECT * FROM json_array_elements(p_grants) LOOP
    IF g->>'ticket' IS NULL THEN
      SELECT (g->>'id')::uuid AS id, (g->>'group')::boolean AS is_group, g->>'who' AS who,
             (g->>'ttl')::int AS ttl, g->>'owner' AS owner, g->>'owner_key' AS owner_key,
             g->>'note' AS note, g->>'link' AS link
      INTO req;
    ELSE
      PERFORM set_config('tracker.dequeue', 'granted', true);
      DELETE FROM waiters WHERE ticket = (g->>'ticket')::bigint
      RETURNING waiters.lock_id AS id, is_group, who, ttl_seconds AS ttl, lock_owner AS owner,
                lock_owner_key AS owner_key, waiters.note, waiters.link
      INTO req;
      found_ := FOUND;
      PERFORM set_config('tracker.dequeue', '', true);
      IF NOT found_ THEN
        RETURN json_build_object('locks', to_json(done), 'vanished', true);
      END IF;
    END IF;
    made := '{}';
    member_ := 0;
    FOR p IN SELECT * FROM json_array_elements(g->'picks') LOOP
      UPDATE services SET last_token = last_token + 1 WHERE service = p->>'service' RETURNING last_token INTO token;
      lock_id := CASE WHEN req.is_group THEN gen_random_uuid() ELSE req.id END;
      INSERT INTO locks (id, service, who, created_at, ttl_seconds, expires_at, fencing_token, owner, owner_key,
                         max_holders, mode, group_id, member, note, link)
      VALUES (lock_id, p->>'service', req.who, t, req.ttl, t + req.ttl * interval '1 second', token, req.owner,
              req.owner_key, (p->>'limit')::int, p->>'mode', CASE WHEN req.is_group THEN req.id END, member_,
              req.note, req.link);
      member_ := member_ + 1;
      made := made || (SELECT tracker_lock_json(l) FROM locks l WHERE l.id = lock_id);
    END LOOP;
    UPDATE idempotency_keys SET granted = true WHERE idempotency_keys.lock_id = req.id;
    done := done || to_json(made);
  END LOOP;
  RETURN json_build_object('locks', to_json(done), 'vanished', false);
END $$;
