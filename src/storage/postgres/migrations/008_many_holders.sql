-- Many holders per service (a limit, shared mode), registered resources with labels, group
-- acquires and priorities. The grant rules live in one place, core/grants.ts (decideGrants):
-- the store reads a snapshot under row locks, asks the rules, and writes what they decided.
--
-- Atomicity no longer comes from UNIQUE(service): every transaction that inserts a lock
-- first locks the `services` row of each service it may write (SELECT ... FOR NO KEY UPDATE,
-- in name order; the row is created first when missing), so the transactions that may
-- change who holds a service run one at a time per service, across replicas, and each one
-- counts holders that no concurrent insert can add to.

-- Locks. max_holders: the limit the lock was granted under (how many exclusive holders its
-- service admits while it is held); mode: exclusive or shared; group_id: the group request
-- it was granted in (its id), NULL for a lock acquired alone; member: a group's locks in the
-- order of its claims (0 for a lock acquired alone).
ALTER TABLE locks DROP CONSTRAINT locks_service_key;
CREATE INDEX locks_service ON locks (service);
ALTER TABLE locks
  ADD COLUMN max_holders int  NOT NULL DEFAULT 1,
  ADD COLUMN mode        text NOT NULL DEFAULT 'exclusive' CHECK (mode IN ('exclusive', 'shared')),
  ADD COLUMN group_id    uuid NULL,
  ADD COLUMN member      int  NOT NULL DEFAULT 0;
CREATE INDEX locks_group_id ON locks (group_id) WHERE group_id IS NOT NULL;

-- Waiters: still one row per request (ticket = arrival order; lock_id = the request's id, a
-- group's id for a group). `service` is what the request shows: its service, its label, or
-- its first claim's. What it asks for is in waiter_claims. mode and label: the first
-- claim's, for display and events.
ALTER TABLE waiters
  ADD COLUMN priority int     NOT NULL DEFAULT 0,
  ADD COLUMN is_group boolean NOT NULL DEFAULT false,
  ADD COLUMN label    text    NULL,
  ADD COLUMN mode     text    NOT NULL DEFAULT 'exclusive' CHECK (mode IN ('exclusive', 'shared'));

-- The claims of each waiting request, in the request's order (idx): a service by name, or
-- `quantity` resources carrying a label. max_holders: the limit the caller named (NULL: 1,
-- or the resource's capacity). Deleted with their waiter.
CREATE TABLE waiter_claims (
  ticket      bigint NOT NULL REFERENCES waiters (ticket) ON DELETE CASCADE,
  idx         int    NOT NULL,
  service     text   NULL,
  label       text   NULL,
  mode        text   NOT NULL CHECK (mode IN ('exclusive', 'shared')),
  max_holders int    NULL,
  quantity    int    NOT NULL DEFAULT 1,
  PRIMARY KEY (ticket, idx),
  CHECK ((service IS NULL) <> (label IS NULL))
);
-- The waiters touching a service (by name) or a label.
CREATE INDEX waiter_claims_service ON waiter_claims (service) WHERE service IS NOT NULL;
CREATE INDEX waiter_claims_label ON waiter_claims (label) WHERE label IS NOT NULL;
INSERT INTO waiter_claims (ticket, idx, service, mode) SELECT ticket, 0, service, 'exclusive' FROM waiters;

-- The registry. labels (a JSON array, as given) and properties (a JSON object of strings)
-- are shown as they are; resource_labels indexes the labels. released_at: when a lock on it
-- last ended (a label request takes the least recently released first). source: 'api', or
-- 'file' for those declared in the resources file (a reload deletes the file's vanished ones).
CREATE TABLE resources (
  name        text        PRIMARY KEY,
  labels      jsonb       NOT NULL DEFAULT '[]',
  properties  jsonb       NOT NULL DEFAULT '{}',
  capacity    int         NOT NULL DEFAULT 1 CHECK (capacity >= 1),
  description text        NULL,
  released_at timestamptz NULL,
  source      text        NOT NULL DEFAULT 'api' CHECK (source IN ('api', 'file'))
);
CREATE TABLE resource_labels (
  label text NOT NULL,
  name  text NOT NULL REFERENCES resources (name) ON DELETE CASCADE,
  PRIMARY KEY (label, name)
);
CREATE INDEX resource_labels_name ON resource_labels (name);

-- Events. max_holders: the lock's limit (NULL for queued/dequeued; events recorded before
-- this migration read as 1); label: a label request's label (queued/dequeued).
ALTER TABLE lock_events
  ADD COLUMN group_id    uuid NULL,
  ADD COLUMN mode        text NOT NULL DEFAULT 'exclusive',
  ADD COLUMN max_holders int  NULL,
  ADD COLUMN label       text NULL;

-- Tickets of the waiters touching a service: those with a claim naming it, or naming a label
-- of the registered resource of that name (live or not: callers filter).
CREATE FUNCTION tracker_touching(p_service text) RETURNS TABLE (ticket bigint)
  LANGUAGE sql STABLE
  AS $$
    SELECT c.ticket FROM waiter_claims c WHERE c.service = p_service
    UNION
    SELECT c.ticket FROM resource_labels rl JOIN waiter_claims c ON c.label = rl.label WHERE rl.name = p_service
  $$;

-- How many live waiters have a claim naming a service (a lock's `waiters`, an event's
-- `waiters`; label claims are not counted: they wait for any of several services, as on
-- SQLite). PL/pgSQL, not SQL: its plan is kept per session, where a SQL function's would be
-- made again in every statement that calls it.
CREATE FUNCTION tracker_waiting(p_service text) RETURNS int LANGUAGE plpgsql STABLE AS $$
BEGIN
  RETURN (SELECT count(*)::int FROM waiter_claims c JOIN waiters w ON w.ticket = c.ticket
          WHERE c.service = p_service AND w.alive_until > tracker_now());
END $$;

-- A lock as the store returns it, as JSON: the one definition of its fields (LockRow in
-- queries.ts). Instants are unix ms computed here, so that they depend on neither the
-- session TimeZone nor the client's type parsers; `waiters` counts the live waiters
-- touching its service; `resource` is the registered resource of that name, or null.
CREATE FUNCTION tracker_lock_json(l locks) RETURNS json LANGUAGE plpgsql STABLE AS $$
BEGIN
  RETURN json_build_object(
    'id', l.id, 'service', l.service, 'who', l.who,
    'created_ms', floor(extract(epoch FROM l.created_at) * 1000)::int8,
    'ttl_seconds', l.ttl_seconds,
    'expires_ms', floor(extract(epoch FROM l.expires_at) * 1000)::int8,
    'fencing_token', l.fencing_token, 'owner', l.owner,
    'waiters', tracker_waiting(l.service),
    'limit', l.max_holders, 'mode', l.mode, 'group_id', l.group_id,
    'resource', (SELECT json_build_object('name', r.name, 'labels', r.labels, 'properties', r.properties)
                 FROM resources r WHERE r.name = l.service));
END $$;

-- The history triggers again (same logic as migration 005), with the group, the mode, the
-- limit and the label, the waiters touching the service, and:
-- - a lock that ends stamps its registered resource's released_at;
-- - a change of max_holders alone (a resource's new capacity) records nothing;
-- - a waiter granted is recorded as dequeued 'granted' because the grant says so for its
--   own statement (set_config('tracker.dequeue', 'granted', true), see tracker_grant): the
--   lock is inserted after the waiter is deleted, and a group's locks have other ids.
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
                             fencing_token, waiters, held_ms, reason, group_id, mode, max_holders)
    VALUES (t, kind, OLD.id, OLD.service, OLD.who, OLD.owner, OLD.created_at, OLD.ttl_seconds,
            OLD.expires_at, OLD.fencing_token, live_waiters,
            floor(extract(epoch FROM CASE WHEN kind = 'expired' THEN OLD.expires_at ELSE t END
                                     - OLD.created_at) * 1000)::bigint,
            CASE WHEN kind = 'force-released' THEN nullif(current_setting('tracker.reason', true), '') END,
            OLD.group_id, OLD.mode, OLD.max_holders);
    UPDATE resources SET released_at = t WHERE name = OLD.service;
  ELSE
    INSERT INTO lock_events (at, type, lock_id, service, who, owner, created_at, ttl_seconds, expires_at,
                             fencing_token, waiters, group_id, mode, max_holders)
    VALUES (t, CASE WHEN TG_OP = 'UPDATE' THEN 'renewed' ELSE 'acquired' END,
            NEW.id, NEW.service, NEW.who, NEW.owner, NEW.created_at, NEW.ttl_seconds, NEW.expires_at,
            NEW.fencing_token, live_waiters, NEW.group_id, NEW.mode, NEW.max_holders);
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
                           group_id, mode, label)
  VALUES (t, CASE WHEN TG_OP = 'DELETE' THEN 'dequeued' ELSE 'queued' END,
          row_.lock_id, row_.service, row_.who, row_.lock_owner, row_.since, row_.ttl_seconds,
          tracker_waiting(row_.service),
          CASE WHEN TG_OP = 'INSERT' THEN NULL
               WHEN OLD.alive_until <= t THEN 'abandoned'
               ELSE coalesce(nullif(current_setting('tracker.dequeue', true), ''), 'left') END,
          CASE WHEN row_.is_group THEN row_.lock_id END, row_.mode, row_.label);
  RETURN NULL;
END $$;

-- CREATE OR REPLACE drops the functions' settings: resolve names in this schema again.
ALTER FUNCTION tracker_record_lock_event() SET search_path FROM CURRENT;
DROP TRIGGER locks_record_event ON locks;
CREATE TRIGGER locks_record_event AFTER INSERT OR UPDATE OF ttl_seconds, expires_at OR DELETE ON locks
  FOR EACH ROW EXECUTE FUNCTION tracker_record_lock_event();
ALTER FUNCTION tracker_record_waiter_event() SET search_path FROM CURRENT;

-- Locks the `services` rows of p_names (sorted and distinct), creating missing ones (their
-- counter at 0: the first token is 1). With p_nowait, creates nothing and waits for nobody:
-- answers false when a row is missing and fails (lock_not_available) when one is locked;
-- the caller then starts again with every row locked from the start. Rows are locked in
-- name order, so two transactions locking overlapping sets never deadlock.
CREATE FUNCTION tracker_lock_services(p_names text[], p_nowait boolean) RETURNS boolean
  LANGUAGE plpgsql AS $$
DECLARE
  got int;
BEGIN
  IF p_nowait THEN
    SELECT count(*) INTO got FROM (
      SELECT FROM services WHERE service = ANY (p_names) ORDER BY service FOR NO KEY UPDATE NOWAIT) AS locked;
    RETURN got = cardinality(p_names);
  END IF;
  INSERT INTO services (service, last_token)
  SELECT name, 0 FROM unnest(p_names) AS name ORDER BY name
  ON CONFLICT (service) DO NOTHING;
  PERFORM FROM services WHERE service = ANY (p_names) ORDER BY service FOR NO KEY UPDATE;
  RETURN true;
END $$;

-- What the grant rules need about p_names, whose services rows this transaction has locked:
-- first the expired holders of those services are deleted (recorded as expired, and
-- returned as `expired`) and the dead waiters touching them (recorded as abandoned; rows another transaction has locked
-- are left to it); then, as JSON, from one snapshot:
-- - resources: the registered ones among p_names (capacity, labels, released_at in ms);
-- - holders: their live locks (service, mode, limit);
-- - waiters: up to p_limit live waiters touching them (by name or by a label of theirs),
--   in grant order (priority, higher first, then ticket), only those before the cut-off
--   (p_priority, p_ticket) when one is given, each with all its claims;
-- - members: for each label named by those claims or in p_labels, the resources carrying it.
CREATE FUNCTION tracker_grant_state(p_names text[], p_labels text[], p_priority int, p_ticket bigint, p_limit int)
  RETURNS json LANGUAGE plpgsql AS $$
DECLARE
  t timestamptz := tracker_now();
  expired json;
  result json;
BEGIN
  WITH gone AS (
    DELETE FROM locks WHERE service = ANY (p_names) AND expires_at <= t RETURNING tracker_lock_json(locks) AS lock)
  SELECT coalesce(json_agg(lock), '[]') INTO expired FROM gone;
  DELETE FROM waiters WHERE ticket IN (
    SELECT w.ticket FROM waiters w
    WHERE w.alive_until <= t
      AND w.ticket IN (SELECT c.ticket FROM waiter_claims c WHERE c.service = ANY (p_names)
                       UNION
                       SELECT c.ticket FROM resource_labels rl JOIN waiter_claims c ON c.label = rl.label
                       WHERE rl.name = ANY (p_names))
    FOR UPDATE SKIP LOCKED)
  AND alive_until <= t;
  WITH line AS (
    SELECT w.ticket, w.lock_id, w.priority, w.service
    FROM waiters w
    WHERE w.alive_until > t
      AND w.ticket IN (SELECT c.ticket FROM waiter_claims c WHERE c.service = ANY (p_names)
                       UNION
                       SELECT c.ticket FROM resource_labels rl JOIN waiter_claims c ON c.label = rl.label
                       WHERE rl.name = ANY (p_names))
      AND (p_ticket IS NULL OR w.priority > p_priority OR (w.priority = p_priority AND w.ticket < p_ticket))
    ORDER BY w.priority DESC, w.ticket
    LIMIT p_limit
  ),
  claims AS (
    SELECT c.* FROM waiter_claims c WHERE c.ticket IN (SELECT ticket FROM line)
  )
  SELECT json_build_object(
    'expired', expired,
    'resources', (SELECT coalesce(json_agg(json_build_object(
                    'name', r.name, 'capacity', r.capacity, 'labels', r.labels,
                    'released_ms', coalesce(floor(extract(epoch FROM r.released_at) * 1000)::int8, 0))), '[]')
                  FROM resources r WHERE r.name = ANY (p_names)),
    'holders', (SELECT coalesce(json_agg(json_build_object('service', l.service, 'mode', l.mode,
                                                           'limit', l.max_holders)), '[]')
                FROM locks l WHERE l.service = ANY (p_names) AND (l.expires_at IS NULL OR l.expires_at > t)),
    'waiters', (SELECT coalesce(json_agg(json_build_object(
                  'ticket', line.ticket, 'lock_id', line.lock_id, 'priority', line.priority,
                  'service', line.service,
                  'claims', (SELECT json_agg(json_build_object('service', c.service, 'label', c.label,
                                                               'mode', c.mode, 'limit', c.max_holders,
                                                               'quantity', c.quantity) ORDER BY c.idx)
                             FROM claims c WHERE c.ticket = line.ticket))
                  ORDER BY line.priority DESC, line.ticket), '[]')
                FROM line),
    'members', (SELECT coalesce(json_object_agg(labels.label, (
                  SELECT coalesce(json_agg(rl.name ORDER BY rl.name), '[]') FROM resource_labels rl
                  WHERE rl.label = labels.label)), '{}')
                FROM (SELECT DISTINCT label FROM claims WHERE label IS NOT NULL
                      UNION SELECT unnest(p_labels)) AS labels (label)))
  INTO result;
  RETURN result;
END $$;

-- Writes the grants the rules decided, in grant order, as JSON: [{ticket (a waiter's, or
-- null for the request being made now), id, group, who, ttl, owner, owner_key, picks:
-- [{service, mode, limit}]}]. A waiter is deleted (recorded as dequeued, granted) and its
-- request's fields taken from its row; each pick bumps its service's fencing counter (its
-- row is locked by the caller) and inserts a lock: a single request's under its id, a
-- group's under new ids with group_id = its id. An idempotency key naming the request is
-- marked granted. Stops at a waiter that is gone (it left meanwhile: the caller decides
-- again). Returns {locks: [[lock json, ...] per grant done], vanished}.
CREATE FUNCTION tracker_grant(p_grants json) RETURNS json LANGUAGE plpgsql AS $$
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
             (g->>'ttl')::int AS ttl, g->>'owner' AS owner, g->>'owner_key' AS owner_key
      INTO req;
    ELSE
      PERFORM set_config('tracker.dequeue', 'granted', true);
      DELETE FROM waiters WHERE ticket = (g->>'ticket')::bigint
      RETURNING waiters.lock_id AS id, is_group, who, ttl_seconds AS ttl, lock_owner AS owner,
                lock_owner_key AS owner_key
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
                         max_holders, mode, group_id, member)
      VALUES (lock_id, p->>'service', req.who, t, req.ttl, t + req.ttl * interval '1 second', token, req.owner,
              req.owner_key, (p->>'limit')::int, p->>'mode', CASE WHEN req.is_group THEN req.id END, member_);
      member_ := member_ + 1;
      made := made || (SELECT tracker_lock_json(l) FROM locks l WHERE l.id = lock_id);
    END LOOP;
    UPDATE idempotency_keys SET granted = true WHERE idempotency_keys.lock_id = req.id;
    done := done || to_json(made);
  END LOOP;
  RETURN json_build_object('locks', to_json(done), 'vanished', false);
END $$;

-- The guide's acquire (one exclusive claim, limit 1), in one round trip when the rules'
-- answer needs no reading: under the service's row lock, with its expired holders deleted,
-- a service that is not a registered resource is taken when it has no holder and no live
-- waiter, and refused (answering its holders) when it has holders that are all exclusive
-- with limit 1 and the request does not wait. Anything else answers 'general': nothing was
-- decided, and the caller runs the full grant pass (decideGrants) in a transaction.
CREATE FUNCTION tracker_acquire_plain(p_id uuid, p_service text, p_who text, p_ttl int, p_owner text,
                                      p_owner_key text, p_wait boolean)
  RETURNS json LANGUAGE plpgsql AS $$
DECLARE
  t timestamptz := tracker_now();
  holders int;
  other boolean;
  token bigint;
BEGIN
  PERFORM FROM services WHERE service = p_service FOR NO KEY UPDATE;
  IF NOT FOUND THEN
    INSERT INTO services (service, last_token) VALUES (p_service, 0) ON CONFLICT (service) DO NOTHING;
    PERFORM FROM services WHERE service = p_service FOR NO KEY UPDATE;
  END IF;
  IF EXISTS (SELECT FROM resources WHERE name = p_service) THEN
    RETURN json_build_object('outcome', 'general');
  END IF;
  DELETE FROM locks WHERE service = p_service AND expires_at <= t;
  SELECT count(*), coalesce(bool_or(mode <> 'exclusive' OR max_holders <> 1), false) INTO holders, other
  FROM locks WHERE service = p_service;
  IF holders > 0 THEN
    IF other OR p_wait THEN
      RETURN json_build_object('outcome', 'general');
    END IF;
    RETURN json_build_object('outcome', 'refused', 'locks',
      (SELECT json_agg(tracker_lock_json(l) ORDER BY l.created_at, l.id) FROM locks l WHERE l.service = p_service));
  END IF;
  IF EXISTS (SELECT FROM waiter_claims c JOIN waiters w ON w.ticket = c.ticket
             WHERE c.service = p_service AND w.alive_until > t) THEN
    RETURN json_build_object('outcome', 'general');
  END IF;
  UPDATE services SET last_token = last_token + 1 WHERE service = p_service RETURNING last_token INTO token;
  INSERT INTO locks (id, service, who, created_at, ttl_seconds, expires_at, fencing_token, owner, owner_key)
  VALUES (p_id, p_service, p_who, t, p_ttl, t + p_ttl * interval '1 second', token, p_owner, p_owner_key);
  RETURN json_build_object('outcome', 'acquired', 'locks',
    (SELECT json_agg(tracker_lock_json(l)) FROM locks l WHERE l.id = p_id));
END $$;

-- A release in one round trip when it can let nobody in: under the lock's service's row
-- lock, with no live waiter touching the service (by name, or by a label of its resource), deletes the lock (if live, and the
-- owner's, and, with p_attempt, not taken over by a retry of its keyed request). Answers
-- 'released' with the lock, 'missing', or 'general' (nothing done: waiters may be let in,
-- the caller runs the release and the grant pass in one transaction).
CREATE FUNCTION tracker_release_plain(p_id uuid, p_key text, p_name text, p_attempt text)
  RETURNS json LANGUAGE plpgsql AS $$
DECLARE
  t timestamptz := tracker_now();
  s text;
  gone json;
BEGIN
  SELECT service INTO s FROM locks WHERE id = p_id AND (expires_at IS NULL OR expires_at > t);
  IF NOT FOUND THEN
    RETURN json_build_object('outcome', 'missing');
  END IF;
  PERFORM FROM services WHERE service = s FOR NO KEY UPDATE;
  IF EXISTS (SELECT FROM waiters w WHERE w.alive_until > t AND w.ticket IN (SELECT ticket FROM tracker_touching(s))) THEN
    RETURN json_build_object('outcome', 'general', 'service', s);
  END IF;
  DELETE FROM locks WHERE id = p_id AND (expires_at IS NULL OR expires_at > t)
    AND (p_key IS NULL OR owner_key = p_key OR (owner_key IS NULL AND owner = p_name))
    AND (p_attempt IS NULL
         OR NOT EXISTS (SELECT FROM idempotency_keys k WHERE k.lock_id = locks.id AND k.attempt <> p_attempt))
  RETURNING tracker_lock_json(locks) INTO gone;
  IF gone IS NULL THEN
    RETURN json_build_object('outcome', 'missing');
  END IF;
  RETURN json_build_object('outcome', 'released', 'locks', json_build_array(gone));
END $$;

-- A waiter leaving, in one round trip when that can let nobody in: a request for one
-- service by name whose service has an exclusive holder with limit 1 (which admits nobody,
-- so no decision about that service changes without this waiter), under that service's row
-- lock. Deletes the waiter (with p_attempt, only if its idempotency key still names that
-- attempt) and announces its service. Answers 'left', 'missing' (already granted or gone),
-- or 'general' with the resources its claims use (nothing done: the caller takes it out and
-- runs the grant pass in one transaction).
CREATE FUNCTION tracker_leave_plain(p_ticket bigint, p_attempt text) RETURNS json LANGUAGE plpgsql AS $$
DECLARE
  t timestamptz := tracker_now();
  s text;
  claims int;
  gone text;
BEGIN
  SELECT min(c.service), count(*) INTO s, claims FROM waiter_claims c WHERE c.ticket = p_ticket;
  IF claims = 0 THEN
    RETURN json_build_object('outcome', 'missing');
  END IF;
  IF claims = 1 AND s IS NOT NULL THEN
    PERFORM FROM services WHERE service = s FOR NO KEY UPDATE;
    IF EXISTS (SELECT FROM locks WHERE service = s AND (expires_at IS NULL OR expires_at > t)
                 AND mode = 'exclusive' AND max_holders = 1) THEN
      DELETE FROM waiters WHERE ticket = p_ticket
        AND (p_attempt IS NULL OR NOT EXISTS (SELECT FROM idempotency_keys k
                                              WHERE k.lock_id = waiters.lock_id AND k.attempt <> p_attempt))
      RETURNING service INTO gone;
      IF gone IS NULL THEN
        RETURN json_build_object('outcome', 'missing');
      END IF;
      PERFORM pg_notify('tracker_lock_changes', gone);
      RETURN json_build_object('outcome', 'left', 'services', json_build_array(gone));
    END IF;
  END IF;
  RETURN json_build_object('outcome', 'general', 'services',
    (SELECT json_agg(DISTINCT n) FROM (
       SELECT c.service FROM waiter_claims c WHERE c.ticket = p_ticket AND c.service IS NOT NULL
       UNION SELECT rl.name FROM waiter_claims c JOIN resource_labels rl ON rl.label = c.label
       WHERE c.ticket = p_ticket) AS used (n)));
END $$;
