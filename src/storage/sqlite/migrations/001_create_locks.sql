-- One row per held lock. UNIQUE(service) is what makes a lock exclusive: of concurrent
-- INSERTs for one service, the database lets exactly one through.
-- WITHOUT ROWID and no index on `who`: every index is one more page written per acquire
-- and per release (measured: the b-tree writes dominate a lock's cost); the table holds
-- only held locks, so filtering on `who` scans a small table.
CREATE TABLE locks (
  id         TEXT    NOT NULL PRIMARY KEY,
  service    TEXT    NOT NULL UNIQUE,
  who        TEXT    NOT NULL,
  -- Unix epoch milliseconds from the store's clock.
  created_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- List order: oldest first, then id.
CREATE INDEX locks_created_at_id ON locks (created_at, id);
