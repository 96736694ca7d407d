import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { status as grpcStatus } from '@grpc/grpc-js';
import { ErrorCode } from '../src/core/errors.js';
import { GRPC_STATUS } from '../src/grpc/error-mapping.js';
import { HTTP_CODES, statusOf } from '../src/http/error-mapping.js';
import { EventJson, LockJson } from '../src/http/schemas.js';
import { ROOT } from './support/server-process.js';

/** The README says what the server does: its tables and examples are checked against the code. */
const README = readFileSync(join(ROOT, 'README.md'), 'utf8');

/** The rows of the markdown table whose header line is `header`, as cells. */
function tableRows(header: string): string[][] {
  const lines = README.split('\n');
  const start = lines.indexOf(header);
  assert.ok(start >= 0, `README has a table headed ${header}`);
  const rows: string[][] = [];
  for (const line of lines.slice(start + 2)) {
    if (!line.startsWith('|')) break;
    rows.push(
      line
        .slice(1, -1)
        .split('|')
        .map((cell) => cell.trim()),
    );
  }
  return rows;
}

/**
 * Every object in `value` (itself included) that has the keys of a lock, but an event's
 * `lock` (which has the fields of an event's lock: checked with the event).
 */
function lockObjects(value: unknown): Record<string, unknown>[] {
  if (typeof value !== 'object' || value === null) return [];
  const event = 'heldSeconds' in value;
  const nested = Object.entries(value)
    .filter(([key]) => !(event && key === 'lock'))
    .flatMap(([, inner]) => lockObjects(inner));
  const keys = Object.keys(value);
  return ['id', 'service', 'who', 'createdAt'].every((key) => keys.includes(key))
    ? [value as Record<string, unknown>, ...nested]
    : nested;
}

/** The JSON documents of the README: ```json blocks (whole, or a document per line) and `# {…}` answers. */
function jsonDocuments(): unknown[] {
  const documents: unknown[] = [];
  for (const block of README.matchAll(/```json\n([\s\S]*?)```/g)) {
    const text = block[1] ?? '';
    try {
      documents.push(JSON.parse(text));
    } catch {
      for (const line of text.split('\n').filter((l) => l.trim() !== '')) documents.push(JSON.parse(line));
    }
  }
  for (const answer of README.matchAll(/^# (\{.*\})$/gm)) documents.push(JSON.parse(answer[1] ?? ''));
  return documents;
}

describe('README', () => {
  test('the error-code table lists every code the server sends, with its HTTP and gRPC status', () => {
    const rows = tableRows('| code | HTTP | gRPC | when |');
    const listed = rows.map(([code]) => code?.replace(/`/g, '') ?? '');
    const sent = [...Object.values(ErrorCode), ...Object.keys(HTTP_CODES)];
    assert.deepEqual([...listed].sort(), [...new Set(sent)].sort(), 'one row per code, no more');
    for (const [cell, http, grpc] of rows) {
      const code = (cell ?? '').replace(/`/g, '') as ErrorCode | keyof typeof HTTP_CODES;
      assert.match(http ?? '', new RegExp(`^${statusOf(code)}\\b`), `${code}: HTTP status`);
      if (code in GRPC_STATUS) {
        const name = grpcStatus[GRPC_STATUS[code as ErrorCode]];
        assert.match(grpc ?? '', new RegExp(`^\`${name}\``), `${code}: gRPC status`);
      } else {
        assert.equal(grpc, '', `${code} is REST's own: no gRPC status`);
      }
    }
  });

  test('every lock shown in an example has exactly the fields of the Lock schema', () => {
    const locks = jsonDocuments().flatMap(lockObjects);
    // The create answer and the 409 body's holders at least.
    assert.ok(locks.length >= 3, `found ${locks.length} locks in the README's examples`);
    const fields = Object.keys(LockJson.properties).sort();
    for (const lock of locks) assert.deepEqual(Object.keys(lock).sort(), fields, JSON.stringify(lock));
  });

  test('the history example has exactly the fields of an event', () => {
    const events = jsonDocuments().filter(
      (document) => typeof document === 'object' && document !== null && 'heldSeconds' in document,
    );
    assert.ok(events.length >= 1);
    for (const event of events) {
      assert.deepEqual(Object.keys(event as object).sort(), Object.keys(EventJson.properties).sort());
      assert.deepEqual(
        Object.keys((event as unknown as { lock: object }).lock).sort(),
        Object.keys(EventJson.properties.lock.properties).sort(),
      );
    }
  });
});
