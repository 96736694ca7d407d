import Database from 'better-sqlite3';

/** Creates a SQLite file that looks migrated by a newer Tracker: schema version `version`. */
export function writeFutureSchema(path: string, version: number): void {
  const db = new Database(path);
  db.exec(
    'CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)',
  );
  db.prepare("INSERT INTO schema_migrations VALUES (?, 'from_the_future', 0)").run(version);
  db.close();
}
