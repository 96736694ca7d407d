import { readFileSync, watch } from 'node:fs';
import { basename, dirname } from 'node:path';
import type { Document, LineCounter } from 'yaml';
import { TrackerError } from '../core/errors.js';
import {
  CONTROL_CHARACTERS,
  MAX_LABELS,
  MAX_LIMIT,
  MAX_PROPERTIES,
  MAX_PROPERTY_LENGTH,
  type ResourceSpec,
} from '../core/lock.js';
import type { LockStore } from '../core/lock-store.js';
import type { Logger } from '../core/logger.js';
import { validateName } from '../core/names.js';
import { yaml } from './yaml.js';

/**
 * The resources file (`--resources-file`): the registry of named resources, declared in
 * YAML (or JSON), applied to the store at start, when the file changes and on SIGHUP.
 *
 * ```yaml
 * resources:
 *   - name: staging-db-1            # required; the service rules (1 to 256 visible characters)
 *     labels: [staging-db]          # optional, default none; up to 32 names
 *     properties:                   # optional, default none; up to 64, values are strings
 *       host: db1.internal
 *       port: "5432"                # quoted: a property value is text
 *     capacity: 1                   # optional, default 1 (1 to 1000): how many hold it at once
 *     description: first staging database   # optional
 * ```
 *
 * Checked strictly: an unknown key, a wrong type, a duplicate name or label, or a bad name
 * is an error naming the file, its line, the entry and the field. The file declares its part
 * of the registry only: resources created through the API stay unless the file names them.
 */

/** A bad resources file; `message` is one line naming the file, the entry and the field. */
export class ResourcesFileError extends Error {
  override readonly name = 'ResourcesFileError';
}

/** Longest description, in code points. */
export const MAX_DESCRIPTION_LENGTH = 1024;

const ENTRY_KEYS: ReadonlySet<string> = new Set(['name', 'labels', 'properties', 'capacity', 'description']);

/** Parses and validates the file's text; throws ResourcesFileError naming the first problem. */
export function parseResourcesFile(text: string, path: string): ResourceSpec[] {
  const lines = new (yaml().LineCounter)();
  const doc = yaml().parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  const syntax = doc.errors[0];
  if (syntax !== undefined) {
    const line = lines.linePos(syntax.pos[0]).line;
    throw new ResourcesFileError(
      `${path}:${line}: not valid YAML or JSON (${syntax.message.split('\n')[0]})`,
    );
  }
  let document: unknown;
  try {
    document = doc.toJS({ maxAliasCount: 100 });
  } catch (error) {
    throw new ResourcesFileError(
      `${path}: cannot be read as YAML (${(error as Error).message.split('\n')[0]})`,
    );
  }
  if (typeof document !== 'object' || document === null || Array.isArray(document)) {
    throw new ResourcesFileError(
      `${path}: expected an object with a "resources" list (write "resources: []" to declare none)`,
    );
  }
  const unknown = Object.keys(document).find((key) => key !== 'resources');
  if (unknown !== undefined) {
    throw new ResourcesFileError(
      `${path}:${lineOf(doc, lines, [unknown])}: unknown key ${JSON.stringify(unknown)} (only "resources")`,
    );
  }
  const resources = (document as { resources?: unknown }).resources;
  if (!Array.isArray(resources)) {
    throw new ResourcesFileError(
      `${path}: "resources" must be a list (write "resources: []" to declare none)`,
    );
  }
  const names = new Set<string>();
  return resources.map((raw: unknown, index): ResourceSpec => {
    /** `field` as shown; `node`: where it is in the entry (default: the field's own key). */
    const fail = (field: string | null, problem: string, node: readonly (string | number)[] = []): never => {
      const inEntry = node.length > 0 || field === null ? node : [field];
      const at = lineOf(doc, lines, ['resources', index, ...inEntry]);
      const name = (raw as { name?: unknown } | null)?.name;
      const which = typeof name === 'string' ? ` (${JSON.stringify(name)})` : '';
      const where = `${path}:${at}: resources[${index}]${which}`;
      throw new ResourcesFileError(field === null ? `${where} ${problem}` : `${where}: ${field} ${problem}`);
    };
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
      return fail(null, 'is not an object with a name');
    }
    const entry = raw as Record<string, unknown>;
    for (const key of Object.keys(entry)) {
      if (!ENTRY_KEYS.has(key)) {
        fail(key, `is not a field of a resource (only ${[...ENTRY_KEYS].join(', ')})`);
      }
    }
    if (entry.name === undefined) fail(null, 'has no name');
    const name = checkName(entry.name, (problem) => fail('name', problem));
    if (names.has(name)) fail('name', `${JSON.stringify(name)} is declared twice`);
    names.add(name);

    const labels: string[] = [];
    if (entry.labels !== undefined) {
      if (!Array.isArray(entry.labels)) fail('labels', 'must be a list of label names');
      const list = entry.labels as unknown[];
      if (list.length > MAX_LABELS) fail('labels', `must list at most ${MAX_LABELS} labels`);
      for (const [at, value] of list.entries()) {
        const field = `labels[${at}]`;
        const label = checkName(value, (problem) => fail(field, problem, ['labels', at]));
        if (labels.includes(label)) fail(field, `${JSON.stringify(label)} is listed twice`, ['labels', at]);
        labels.push(label);
      }
    }

    const properties: Record<string, string> = {};
    if (entry.properties !== undefined) {
      const given = entry.properties;
      if (typeof given !== 'object' || given === null || Array.isArray(given)) {
        fail('properties', 'must be a mapping of names to string values');
      }
      const pairs = Object.entries(given as Record<string, unknown>);
      if (pairs.length > MAX_PROPERTIES) fail('properties', `must hold at most ${MAX_PROPERTIES} properties`);
      for (const [key, value] of pairs) {
        const field = `properties.${key}`;
        const node = ['properties', key];
        const property = checkName(key, (problem) => fail(field, `(the property name) ${problem}`, node));
        if (typeof value !== 'string') {
          fail(field, `must be a string, not ${describeType(value)} (quote it: "${String(value)}")`, node);
        }
        const text = value as string;
        if ([...text].length > MAX_PROPERTY_LENGTH) {
          fail(field, `must be at most ${MAX_PROPERTY_LENGTH} characters`, node);
        }
        if (CONTROL_CHARACTERS.test(text)) fail(field, 'must not contain control characters', node);
        if (Object.hasOwn(properties, property)) fail(field, 'is given twice (once in another form)', node);
        properties[property] = text;
      }
    }

    let capacity = 1;
    if (entry.capacity !== undefined) {
      const given = entry.capacity;
      if (typeof given !== 'number' || !Number.isInteger(given) || given < 1 || given > MAX_LIMIT) {
        fail('capacity', `must be an integer from 1 to ${MAX_LIMIT}, not ${JSON.stringify(given) ?? 'that'}`);
      }
      capacity = given as number;
    }

    let description: string | null = null;
    if (entry.description !== undefined && entry.description !== null) {
      const given = entry.description;
      if (typeof given !== 'string') fail('description', `must be a string, not ${describeType(given)}`);
      // Trimmed: a YAML block scalar (`description: >`) ends with a line break.
      const text = (given as string).trim();
      if ([...text].length > MAX_DESCRIPTION_LENGTH) {
        fail('description', `must be at most ${MAX_DESCRIPTION_LENGTH} characters`);
      }
      if (CONTROL_CHARACTERS.test(text)) {
        fail('description', 'must be one line, without control characters');
      }
      description = text === '' ? null : text;
    }
    return { name, labels, properties, capacity, description };
  });
}

/**
 * A resource name, label or property name: the rules of `service` (validateName), as it is
 * kept (NFC); `fail` is told the problem otherwise.
 */
function checkName(value: unknown, fail: (problem: string) => never): string {
  if (typeof value !== 'string') return fail(`must be a string, not ${describeType(value)}`);
  try {
    return validateName('service', value);
  } catch (error) {
    if (error instanceof TrackerError) return fail(error.message.replace(/^service /, ''));
    throw error;
  }
}

/** What a YAML value is, in words: `the number 5432`, `a list`. */
function describeType(value: unknown): string {
  if (value === null || value === undefined) return 'empty';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'a mapping';
  return `the ${typeof value} ${String(value)}`;
}

/**
 * The 1-based line of what `path` names: a mapping's key (where `key:` is written), a list's
 * item; or of its nearest ancestor that exists.
 */
function lineOf(doc: Document, lines: LineCounter, path: readonly (string | number)[]): number {
  const { isMap, isScalar } = yaml();
  for (let depth = path.length; depth > 0; depth--) {
    const parent = depth === 1 ? doc.contents : doc.getIn(path.slice(0, depth - 1), true);
    const last = path[depth - 1];
    const node = isMap(parent)
      ? parent.items.find((pair) => isScalar(pair.key) && pair.key.value === last)?.key
      : doc.getIn(path.slice(0, depth), true);
    const start = (node as { range?: [number, number, number] } | undefined)?.range?.[0];
    if (start !== undefined) return lines.linePos(start).line;
  }
  return 1;
}

export function readResourcesFile(path: string): ResourceSpec[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new ResourcesFileError(
      `${path}: cannot be read (${(error as NodeJS.ErrnoException).code ?? 'error'})`,
    );
  }
  return parseResourcesFile(text, path);
}

export interface ResourcesFileDeps {
  readonly path: string;
  readonly store: Pick<LockStore, 'syncResources' | 'onChange'>;
  readonly logger: Logger;
}

export interface ResourcesFile {
  /**
   * Reads the file again and applies it; resolves when done. Never rejects: a bad file or a
   * store that fails is logged, and the registry stays as it was.
   */
  reload(why: string): Promise<void>;
  /** Stops watching the file; resolves once a reload under way has ended. */
  close(): Promise<void>;
}

/**
 * Loads the resources file into the store (a bad file rejects with ResourcesFileError: the
 * server does not start), then keeps the store's file-declared registry equal to the file:
 * reloaded when the file changes and on `reload()` (SIGHUP). A reload that fails keeps the
 * previous registry and logs why. A resource that left the file while held stays registered
 * (logged as a warning) until it is released: the file is then applied again.
 */
export async function loadResourcesFile({ path, store, logger }: ResourcesFileDeps): Promise<ResourcesFile> {
  /** Resources the file no longer declares that were held at the last reload. */
  let kept = new Set<string>();
  const apply = async (why: string | null) => {
    const specs = readResourcesFile(path);
    const result = await store.syncResources(specs);
    kept = new Set(result.kept);
    logger.info(
      { resources: specs.length, file: path, ...(why === null ? {} : { why }) },
      why === null ? 'resources file loaded' : 'resources reloaded',
    );
    if (result.kept.length > 0) {
      logger.warn(
        { kept: result.kept, file: path },
        'resources removed from the file are held: they stay registered until released',
      );
    }
  };
  await apply(null);

  // Reloads run one at a time; triggers that come while one waits to start share it.
  let tail: Promise<void> = Promise.resolve();
  let queued = false;
  let closed = false;
  const reload = (why: string): Promise<void> => {
    if (closed) return tail;
    if (queued) return tail;
    queued = true;
    tail = tail.then(async () => {
      queued = false;
      if (closed) return;
      try {
        await apply(why);
      } catch (error) {
        logger.error(
          { err: error, file: path, why },
          'resources file not reloaded; the previous resources stay in force',
        );
      }
    });
    return tail;
  };

  // Editors replace the file (rename), which ends a watch on the file itself: watch its
  // folder, for its name (as the tokens file).
  let debounce: NodeJS.Timeout | undefined;
  const soon = (why: string) => {
    clearTimeout(debounce);
    debounce = setTimeout(() => void reload(why), 100);
    debounce.unref();
  };
  const watcher = watch(dirname(path), (_event, changed) => {
    if (changed !== null && changed !== basename(path)) return;
    soon('file changed');
  });
  watcher.unref();
  watcher.on('error', (error) => logger.error({ err: error, file: path }, 'cannot watch the resources file'));
  // A kept resource that may have been released (by any process sharing the store): apply
  // the file again, which deletes it once it is free.
  const stopListening = store.onChange((service) => {
    if (kept.has(service)) soon('a kept resource changed');
  });

  return {
    reload,
    close() {
      closed = true;
      clearTimeout(debounce);
      watcher.close();
      stopListening();
      return tail;
    },
  };
}
