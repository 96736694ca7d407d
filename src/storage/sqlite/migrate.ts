import { readdirSync, readFileSync } from 'node:fs';
import type Database from 'better-sqlite3';

export interface Migration {
  readonly version: number;
  readonly name: string;
  readonly sql: string;
}

const MIGRATION_FILE = /^(\d{3})_([a-z0-9_]+)\.sql$/;

/** Reads `NNN_name.sql` files from a folder, in version order; gaps and duplicates are bugs. */
export function readMigrations(folder: URL): Migration[] {
  const migrations = readdirSync(folder)
    .map((file) => ({ file, match: MIGRATION_FILE.exec(file) }))
    .filter((entry) => entry.match !== null)
    .map(({ file, match }) => ({
      version: Number(match?.[1]),
      name: match?.[2] ?? file,
      sql: readFileSync(new URL(file, folder), 'utf8'),
    }))
    .sort((a, b) => a.version - b.version);
  migrations.forEach((migration, index) => {
    if (migration.version !== index + 1) {
      throw new Error(`migration ${migration.version}_${migration.name} is out of sequence`);
    }
  });
  return migrations;
}

export class SchemaTooNewError extends Error {
  override readonly name = 'SchemaTooNewError';
}

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
    throw new SchemaTooNewError(
      `database schema is version ${found} but this Tracker knows only up to ${known}; upgrade Tracker`,
    );
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
