-- One row per held lock. UNIQUE(service) is what makes a lock exclusive: of concurrent
-- INSERTs for one service, the database lets exactly one through.
CREATE TABLE locks (
  id         TEXT    PRIMARY KEY,
  service    TEXT    NOT NULL UNIQUE,
  who        TEXT    NOT NULL,
  -- Unix epoch milliseconds from the store's clock.
  created_at INTEGER NOT NULL
) STRICT;

-- List order: oldest first, then id.
CREATE INDEX locks_created_at_id ON locks (created_at, id);
CREATE INDEX locks_who ON locks (who);
