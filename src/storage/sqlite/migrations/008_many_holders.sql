-- Many holders (semaphores, shared mode), registered resources with labels, groups and
-- priorities. A service may now have several holders, so UNIQUE(service) goes: every grant
-- is decided inside one IMMEDIATE transaction (SQLite's single writer, across processes
-- sharing the file) by the rules of core/grants.ts, over the holders and the queue it reads
-- in that transaction.
--
-- locks: max_holders is the lock's limit (how many exclusive holders its service admits
-- while it is held); mode 'exclusive' | 'shared'; group_id: the group's id (the request's
-- id) for a lock granted in a group.
CREATE TABLE locks_new (
  id            TEXT    NOT NULL PRIMARY KEY,
  service       TEXT    NOT NULL,
  who           TEXT    NOT NULL,
  created_at    INTEGER NOT NULL,
  ttl_seconds   INTEGER,
  expires_at    INTEGER,
  fencing_token INTEGER NOT NULL DEFAULT 0,
  owner         TEXT,
  owner_key     TEXT,
  max_holders   INTEGER NOT NULL DEFAULT 1,
  mode          TEXT    NOT NULL DEFAULT 'exclusive' CHECK (mode IN ('exclusive', 'shared')),
  group_id      TEXT,
  -- A group's locks in the order of its claims (0 for a lock acquired alone).
  member        INTEGER NOT NULL DEFAULT 0
) STRICT, WITHOUT ROWID;

INSERT INTO locks_new (id, service, who, created_at, ttl_seconds, expires_at, fencing_token, owner, owner_key)
SELECT id, service, who, created_at, ttl_seconds, expires_at, fencing_token, owner, owner_key FROM locks;

DROP TABLE locks;
ALTER TABLE locks_new RENAME TO locks;

CREATE INDEX locks_service ON locks (service);
CREATE INDEX locks_created_at_id ON locks (created_at, id);
CREATE INDEX locks_expires_at ON locks (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX locks_group_id ON locks (group_id) WHERE group_id IS NOT NULL;

-- The fencing counter, as before (migration 002): an insert takes the service's last token
-- plus one, and this records it, in the same statement.
CREATE TRIGGER locks_record_fencing_token AFTER INSERT ON locks BEGIN
  INSERT INTO services (service, last_token) VALUES (NEW.service, NEW.fencing_token)
  ON CONFLICT (service) DO UPDATE SET last_token = excluded.last_token;
END;

-- waiters: one row per waiting request (lock_id: the request's id, a group's id for a
-- group); its claims are in waiter_claims. service / label / mode: the first claim's, for
-- display and the history.
ALTER TABLE waiters ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
ALTER TABLE waiters ADD COLUMN is_group INTEGER NOT NULL DEFAULT 0;
ALTER TABLE waiters ADD COLUMN label TEXT;
ALTER TABLE waiters ADD COLUMN mode TEXT NOT NULL DEFAULT 'exclusive';

CREATE TABLE waiter_claims (
  ticket      INTEGER NOT NULL,
  idx         INTEGER NOT NULL,
  service     TEXT,
  label       TEXT,
  mode        TEXT    NOT NULL,
  max_holders INTEGER,
  quantity    INTEGER NOT NULL DEFAULT 1,
  PRIMARY KEY (ticket, idx)
) STRICT, WITHOUT ROWID;
CREATE INDEX waiter_claims_service ON waiter_claims (service) WHERE service IS NOT NULL;
CREATE INDEX waiter_claims_label ON waiter_claims (label) WHERE label IS NOT NULL;

INSERT INTO waiter_claims (ticket, idx, service, label, mode, max_holders, quantity)
SELECT ticket, 0, service, NULL, 'exclusive', NULL, 1 FROM waiters;

-- The registry. labels and properties are JSON (an array of strings, an object of strings);
-- resource_labels indexes the labels. released_at: when a lock on it last ended (label
-- claims take the least recently released first). source: 'api' or 'file' (--resources-file).
CREATE TABLE resources (
  name        TEXT    NOT NULL PRIMARY KEY,
  labels      TEXT    NOT NULL,
  properties  TEXT    NOT NULL,
  capacity    INTEGER NOT NULL,
  description TEXT,
  released_at INTEGER NOT NULL DEFAULT 0,
  source      TEXT    NOT NULL DEFAULT 'api'
) STRICT, WITHOUT ROWID;

CREATE TABLE resource_labels (
  label TEXT NOT NULL,
  name  TEXT NOT NULL,
  PRIMARY KEY (label, name)
) STRICT, WITHOUT ROWID;
CREATE INDEX resource_labels_name ON resource_labels (name);

ALTER TABLE lock_events ADD COLUMN group_id TEXT;
ALTER TABLE lock_events ADD COLUMN mode TEXT NOT NULL DEFAULT 'exclusive';
ALTER TABLE lock_events ADD COLUMN max_holders INTEGER;
ALTER TABLE lock_events ADD COLUMN label TEXT;
CREATE INDEX lock_events_group_id ON lock_events (group_id) WHERE group_id IS NOT NULL;

-- The history triggers again (the locks ones went with the old table), with the new columns.
DROP TRIGGER waiters_event_queued;
DROP TRIGGER waiters_event_dequeued;

-- `waiters` of an event: the live requests with a claim naming its service (label claims
-- are not counted: they wait for any of several services).
CREATE TRIGGER locks_event_acquired AFTER INSERT ON locks BEGIN
  INSERT INTO lock_events (at, type, lock_id, service, who, owner, created_at, ttl_seconds, expires_at,
                           fencing_token, waiters, group_id, mode, max_holders)
  VALUES (tracker_now(), 'acquired', NEW.id, NEW.service, NEW.who, NEW.owner, NEW.created_at,
          NEW.ttl_seconds, NEW.expires_at, NEW.fencing_token,
          (SELECT count(*) FROM waiter_claims c JOIN waiters w ON w.ticket = c.ticket
           WHERE c.service = NEW.service AND w.alive_until > tracker_now()),
          NEW.group_id, NEW.mode, NEW.max_holders);
END;

CREATE TRIGGER locks_event_renewed AFTER UPDATE OF ttl_seconds, expires_at ON locks BEGIN
  INSERT INTO lock_events (at, type, lock_id, service, who, owner, created_at, ttl_seconds, expires_at,
                           fencing_token, waiters, group_id, mode, max_holders)
  VALUES (tracker_now(), 'renewed', NEW.id, NEW.service, NEW.who, NEW.owner, NEW.created_at,
          NEW.ttl_seconds, NEW.expires_at, NEW.fencing_token,
          (SELECT count(*) FROM waiter_claims c JOIN waiters w ON w.ticket = c.ticket
           WHERE c.service = NEW.service AND w.alive_until > tracker_now()),
          NEW.group_id, NEW.mode, NEW.max_holders);
END;

CREATE TRIGGER locks_event_ended AFTER DELETE ON locks BEGIN
  INSERT INTO lock_events (at, type, lock_id, service, who, owner, created_at, ttl_seconds, expires_at,
                           fencing_token, waiters, held_ms, reason, group_id, mode, max_holders)
  SELECT tracker_now(), ended.type, OLD.id, OLD.service, OLD.who, OLD.owner, OLD.created_at,
         OLD.ttl_seconds, OLD.expires_at, OLD.fencing_token,
         (SELECT count(*) FROM waiter_claims c JOIN waiters w ON w.ticket = c.ticket
          WHERE c.service = OLD.service AND w.alive_until > tracker_now()),
         CASE WHEN ended.type = 'expired' THEN OLD.expires_at ELSE tracker_now() END - OLD.created_at,
         CASE WHEN ended.type = 'force-released' THEN tracker_context('reason') END,
         OLD.group_id, OLD.mode, OLD.max_holders
  FROM (SELECT CASE WHEN OLD.expires_at <= tracker_now() THEN 'expired'
                    ELSE coalesce(tracker_context('release'), 'released') END AS type) AS ended;
  UPDATE resources SET released_at = tracker_now() WHERE name = OLD.service;
END;

-- A waiter's claims are written after its row: its queued event counts it through them.
CREATE TRIGGER waiters_event_queued AFTER INSERT ON waiter_claims WHEN NEW.idx = 0 BEGIN
  INSERT INTO lock_events (at, type, lock_id, service, who, owner, created_at, ttl_seconds, waiters,
                           group_id, mode, label)
  SELECT tracker_now(), 'queued', w.lock_id, w.service, w.who, w.lock_owner, w.since, w.ttl_seconds,
         (SELECT count(*) FROM waiter_claims c JOIN waiters x ON x.ticket = c.ticket
          WHERE c.service = w.service AND x.alive_until > tracker_now()),
         CASE WHEN w.is_group = 1 THEN w.lock_id END, w.mode, w.label
  FROM waiters w WHERE w.ticket = NEW.ticket;
END;

CREATE TRIGGER waiters_event_dequeued AFTER DELETE ON waiters BEGIN
  DELETE FROM waiter_claims WHERE ticket = OLD.ticket;
  INSERT INTO lock_events (at, type, lock_id, service, who, owner, created_at, ttl_seconds, waiters, reason,
                           group_id, mode, label)
  VALUES (tracker_now(), 'dequeued', OLD.lock_id, OLD.service, OLD.who, OLD.lock_owner, OLD.since,
          OLD.ttl_seconds,
          (SELECT count(*) FROM waiter_claims c JOIN waiters w ON w.ticket = c.ticket
           WHERE c.service = OLD.service AND w.alive_until > tracker_now()),
          CASE WHEN OLD.alive_until <= tracker_now() THEN 'abandoned'
               ELSE coalesce(tracker_context('dequeue'), 'left') END,
          CASE WHEN OLD.is_group = 1 THEN OLD.lock_id END, OLD.mode, OLD.label);
END;
