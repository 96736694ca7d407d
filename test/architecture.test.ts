import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, test } from 'node:test';
import semver from 'semver';
import type { Caller } from '../src/core/auth.js';
import type { LockService } from '../src/core/lock-service.js';
import { ROOT } from './support/server-process.js';

/**
 * The rules of the code's shape, checked on the sources: they hold because a test fails when
 * one is broken, not because someone remembers them.
 */

function sources(folder: string): Array<{ path: string; text: string }> {
  const files: Array<{ path: string; text: string }> = [];
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) {
        if (entry.name !== 'generated') walk(path);
      } else if (entry.name.endsWith('.ts')) {
        files.push({ path: relative(ROOT, path), text: readFileSync(path, 'utf8') });
      }
    }
  };
  walk(join(ROOT, folder));
  return files;
}

/** The code of a source, without its comments (a comment may name what the code may not use). */
function code(text: string): string {
  return text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|[^:'"`])\/\/.*$/gm, '$1');
}

describe('architecture', () => {
  test('core/ imports no framework, driver or generated code', () => {
    for (const { path, text } of sources('src/core')) {
      for (const [, from] of code(text).matchAll(/from '([^']+)'/g)) {
        assert.ok(from?.startsWith('./'), `${path} imports ${from}: core/ uses only core/`);
      }
    }
  });

  test('core/ reads time only through the injected clock', () => {
    for (const { path, text } of sources('src/core')) {
      if (path.endsWith('clock.ts')) continue;
      const body = code(text);
      for (const reading of [/Date\.now\(/, /performance\.now\(/, /new Date\(\)/, /hrtime/]) {
        assert.doesNotMatch(body, reading, `${path} reads the time itself (${reading})`);
      }
    }
  });

  test('one Logger interface: no other logger type is declared anywhere in src/', () => {
    for (const { path, text } of sources('src')) {
      if (path.endsWith(join('core', 'logger.ts'))) continue;
      assert.doesNotMatch(
        code(text),
        /(interface|type)\s+\w*Logger\b/,
        `${path} declares a logger type of its own`,
      );
    }
  });

  test('the transports depend on the LockService interface, and only compose.ts builds one', () => {
    for (const { path, text } of sources('src')) {
      const body = code(text);
      if (path.startsWith(join('src', 'http')) || path.startsWith(join('src', 'grpc'))) {
        assert.doesNotMatch(
          body,
          /createLockService|LockServiceRuntime/,
          `${path} reaches past the interface`,
        );
      }
      if (!path.endsWith('compose.ts') && !path.endsWith('lock-service.ts')) {
        assert.doesNotMatch(body, /createLockService\(/, `${path} builds a lock service`);
      }
    }
  });

  test('the SQLite store keeps its statements in queries.ts', () => {
    const store = code(readFileSync(join(ROOT, 'src/storage/sqlite/sqlite-lock-store.ts'), 'utf8'));
    assert.doesNotMatch(
      store,
      /\b(SELECT|INSERT INTO|DELETE FROM|UPDATE \w+ SET)\b/,
      'SQL outside queries.ts',
    );
  });

  test('every caller is named: a call without one does not compile', () => {
    // Checked by the type-check (npm run typecheck), which fails if these stop being errors.
    const compileOnly = (service: LockService, caller: Caller) => {
      // @ts-expect-error: the caller is required
      void service.acquire({ service: 's', who: 'w' });
      // @ts-expect-error: the caller is required
      void service.snapshot({});
      // @ts-expect-error: the caller is required
      void service.release({ id: 'x' });
      void service.get({ caller, id: 'x' });
    };
    assert.equal(typeof compileOnly, 'function');
  });

  test('every installed package accepts this Node.js (no EBADENGINE on npm ci)', () => {
    const lock = JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8')) as {
      packages: Record<string, { engines?: { node?: string }; dev?: boolean }>;
    };
    const refusing = Object.entries(lock.packages)
      .filter(([, info]) => info.engines?.node !== undefined)
      .filter(
        ([, info]) =>
          !semver.satisfies(process.version, info.engines?.node ?? '*', { includePrerelease: true }),
      )
      .map(([name, info]) => `${name} wants node ${info.engines?.node}`);
    assert.deepEqual(refusing, []);
  });
});
