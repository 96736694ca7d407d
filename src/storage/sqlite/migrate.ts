import type Database from 'better-sqlite3';
import { type Migration, schemaTooNew } from '../migrations.js';

/**
 * Brings the schema up to date and records each step in `schema_migrations`. Each migration
 * runs in its own IMMEDIATE transaction, so two processes opening one file at once apply it
 * exactly once: the second waits on the write lock, then sees the version already recorded.
 */
export function migrate(db: Database.Database, migrations: readonly Migration[]): void {
  db.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL,
    applied_at INTEGER NOT NULL
  ) STRICT`);
  const current = db.prepare<[], { version: number | null }>(
    'SELECT max(version) AS version FROM schema_migrations',
  );
  const known = migrations.length;
  const found = current.get()?.version ?? 0;
  if (found > known) {
    throw schemaTooNew(found, known);
  }
  const record = db.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)');
  for (const migration of migrations) {
    db.transaction(() => {
      if ((current.get()?.version ?? 0) >= migration.version) return;
      db.exec(migration.sql);
      record.run(migration.version, migration.name, Date.now());
    }).immediate();
  }
}
