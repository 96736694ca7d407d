import { readdirSync, readFileSync } from 'node:fs';

export interface Migration {
  readonly version: number;
  readonly name: string;
  readonly sql: string;
}

const MIGRATION_FILE = /^(\d{3})_([a-z0-9_]+)\.sql$/;

/**
 * Numbered plain-SQL migrations, shared by the stores: each store keeps its own
 * `migrations/NNN_name.sql` folder and records what it applied in `schema_migrations`.
 */

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

/** The database was migrated by a newer Tracker; this one must not touch it. */
export class SchemaTooNewError extends Error {
  override readonly name = 'SchemaTooNewError';
}

/** The schema message both stores give when the database is newer than this binary. */
export function schemaTooNew(found: number, known: number): SchemaTooNewError {
  return new SchemaTooNewError(
    `database schema is version ${found} but this Tracker knows only up to ${known}; upgrade Tracker`,
  );
}
