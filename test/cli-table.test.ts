/**
 * The CLI's aligned tables with names that are wider or narrower on a terminal than their
 * length in UTF-16 code units: CJK (two columns a character), emoji (two columns, two code
 * units), a combining accent (one column, two code units). Every column must start at the
 * same terminal column on every line.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import stringWidth from 'string-width';
import { formatHistory, formatLockTable, formatQueue, formatTokens } from '../src/cli/table.js';
import type { LockEvent, LockInfo, QueueInfo } from '../src/sdk/index.js';

const NOW = Date.parse('2026-11-26T17:00:00.000Z');
const ago = (seconds: number) => new Date(NOW - seconds * 1000).toISOString();

/** Wide, narrow and plain names side by side. */
const NAMES = ['部署-生产', '🚀deploy', 'e\u0301', 'plain-service', '数据库迁移🚀'] as const;

function lock(service: string, who: string, index: number): LockInfo {
  return {
    id: `00000000-0000-4000-8000-00000000000${index}`,
    service,
    who,
    createdAt: ago(60 + index),
    ttlSeconds: 600,
    expiresAt: new Date(NOW + 540_000).toISOString(),
    fencingToken: index + 1,
    waiters: index,
    owner: null,
    limit: 1,
    mode: 'exclusive',
    groupId: null,
    resource: null,
    note: null,
    link: null,
  };
}

function event(service: string, who: string, index: number): LockEvent {
  return {
    id: 100 - index,
    type: index % 2 === 0 ? 'released' : 'acquired',
    at: ago(index * 7),
    service,
    who,
    lock: { ...lock(service, who, index), fencingToken: index + 1 },
    heldSeconds: index % 2 === 0 ? 42 + index : null,
    reason: index === 2 ? '因为 🚀 e\u0301' : null,
    groupId: null,
    label: null,
    stolenBy: null,
  };
}

/**
 * The terminal column where each cell of each line starts, found by looking for the cells in
 * order (they are known) and measuring what comes before each. Also checks that only spaces
 * stand between cells, so that a cell found is the cell meant.
 */
function cellStarts(table: string, rows: readonly (readonly string[])[]): number[][] {
  const lines = table.split('\n');
  assert.equal(lines.length, rows.length, `one line per row:\n${table}`);
  return lines.map((line, lineIndex) => {
    const cells = rows[lineIndex] ?? [];
    let cursor = 0;
    return cells.map((cell, column) => {
      const at = line.indexOf(cell, cursor);
      assert.ok(at >= 0, `line ${lineIndex} has ${JSON.stringify(cell)}: ${JSON.stringify(line)}`);
      assert.match(line.slice(cursor, at), column === 0 ? /^$/ : /^ {2,}$/, `spaces only before ${cell}`);
      cursor = at + cell.length;
      return stringWidth(line.slice(0, at));
    });
  });
}

/** Every column starts at the same terminal column on every line, two spaces after the widest cell. */
function assertAligned(table: string, rows: readonly (readonly string[])[]): void {
  const starts = cellStarts(table, rows);
  const first = starts[0] ?? [];
  for (const [lineIndex, line] of starts.entries()) {
    assert.deepEqual(line, first, `line ${lineIndex} starts its columns where the header does:\n${table}`);
  }
  for (let column = 1; column < first.length; column++) {
    const widest = Math.max(...rows.map((row) => stringWidth(row[column - 1] ?? '')));
    assert.equal(first[column], (first[column - 1] ?? 0) + widest + 2, `column ${column}:\n${table}`);
  }
  for (const line of table.split('\n')) assert.equal(line, line.trimEnd(), 'no trailing spaces');
}

describe('CLI tables align by terminal width', () => {
  test('lock list: CJK, emoji and combining marks in service and who', () => {
    const locks = NAMES.map((name, index) => lock(name, NAMES[(index + 1) % NAMES.length] as string, index));
    const table = formatLockTable(locks, NOW);
    assertAligned(table, [
      ['SERVICE', 'WHO', 'AGE', 'EXPIRES IN', 'TOKEN', 'WAITERS'],
      ...locks.map((l, index) => [
        l.service,
        l.who,
        index === 0 ? '1m' : `1m ${index}s`,
        '9m',
        String(l.fencingToken),
        String(index),
      ]),
    ]);
  });

  test('lock list: the exact text for a wide and a narrow name', () => {
    const table = formatLockTable([lock('部署-生产', 'e\u0301', 0), lock('🚀deploy', 'ci', 1)], NOW);
    assert.equal(
      table,
      [
        'SERVICE    WHO  AGE    EXPIRES IN  TOKEN  WAITERS',
        '部署-生产  e\u0301    1m     9m          1      0',
        '🚀deploy   ci   1m 1s  9m          2      1',
      ].join('\n'),
    );
  });

  test('lock list with owners: the owner column lines up after wide names too', () => {
    const locks = [
      { ...lock('部署', '🚀', 0), owner: '管理员' },
      { ...lock('s', 'w', 1), owner: null },
    ];
    const table = formatLockTable(locks, NOW);
    assertAligned(table, [
      ['SERVICE', 'WHO', 'AGE', 'EXPIRES IN', 'TOKEN', 'WAITERS', 'OWNER'],
      ['部署', '🚀', '1m', '9m', '1', '0', '管理员'],
      ['s', 'w', '1m 1s', '9m', '2', '1', '-'],
    ]);
  });

  test('lock queue: priority, mode and label or group columns once some waiter has them', () => {
    const waiter = (who: string, extra: Partial<QueueInfo['waiters'][number]>) => ({
      who,
      since: ago(5),
      position: 1,
      priority: 0,
      mode: 'exclusive' as const,
      label: null,
      groupId: null,
      note: null,
      link: null,
      ...extra,
    });
    const queue: QueueInfo = {
      service: 'pool',
      holder: lock('pool', 'a', 0),
      holders: [lock('pool', 'a', 0), lock('pool', 'b', 1)],
      waiters: [
        waiter('urgent', { position: 1, priority: 10 }),
        waiter('reader', { position: 2, mode: 'shared' }),
        waiter('phone-job', { position: 3, label: '安卓' }),
        waiter('e2e', { position: 4, groupId: 'g-1' }),
      ],
    };
    const [heading, ...rest] = formatQueue(queue, NOW).split('\n');
    assert.match(heading ?? '', /^pool is held by a for 1m \(lock 0{8}-.*\) and 1 more$/);
    assertAligned(rest.join('\n'), [
      ['POSITION', 'WHO', 'WAITING', 'PRIORITY', 'MODE', 'VIA'],
      ['1', 'urgent', '5s', '10', 'exclusive', '-'],
      ['2', 'reader', '5s', '0', 'shared', '-'],
      ['3', 'phone-job', '5s', '0', 'exclusive', 'label 安卓'],
      ['4', 'e2e', '5s', '0', 'exclusive', 'group g-1'],
    ]);
  });

  test('notes and links: their own columns, only when some lock or waiter has one; the holder line says them', () => {
    const noted = { ...lock('pool', 'a', 0), note: '部署 v2', link: 'https://ci.example/1' };
    const queue: QueueInfo = {
      service: 'pool',
      holder: noted,
      holders: [noted],
      waiters: [
        {
          who: 'next',
          since: ago(5),
          position: 1,
          priority: 0,
          mode: 'exclusive',
          label: null,
          groupId: null,
          note: 'then v3',
          link: null,
        },
        {
          who: 'later',
          since: ago(5),
          position: 2,
          priority: 0,
          mode: 'exclusive',
          label: null,
          groupId: null,
          note: null,
          link: null,
        },
      ],
    };
    const [heading, ...rest] = formatQueue(queue, NOW).split('\n');
    assert.match(
      heading ?? '',
      /^pool is held by a for 1m \(lock 0{8}-.*\) — 部署 v2 \(https:\/\/ci\.example\/1\)$/,
    );
    assertAligned(rest.join('\n'), [
      ['POSITION', 'WHO', 'WAITING', 'NOTE'],
      ['1', 'next', '5s', 'then v3'],
      ['2', 'later', '5s', '-'],
    ]);
    assertAligned(formatLockTable([noted, lock('other', 'b', 1)], NOW), [
      ['SERVICE', 'WHO', 'AGE', 'EXPIRES IN', 'TOKEN', 'WAITERS', 'LINK', 'NOTE'],
      ['pool', 'a', '1m', '9m', '1', '0', 'https://ci.example/1', '部署 v2'],
      ['other', 'b', '1m 1s', '9m', '2', '1', '-', '-'],
    ]);
  });

  test('lock queue: waiters with wide names', () => {
    const queue: QueueInfo = {
      service: '部署-生产',
      holder: lock('部署-生产', '🚀deploy', 0),
      holders: [lock('部署-生产', '🚀deploy', 0)],
      waiters: NAMES.map((name, index) => ({
        who: name,
        since: ago(5 * (index + 1)),
        position: index + 1,
        priority: 0,
        mode: 'exclusive' as const,
        label: null,
        groupId: null,
        note: null,
        link: null,
      })),
    };
    const [heading, ...rest] = formatQueue(queue, NOW).split('\n');
    assert.match(heading ?? '', /^部署-生产 is held by 🚀deploy for 1m \(lock 0{8}-/);
    assertAligned(rest.join('\n'), [
      ['POSITION', 'WHO', 'WAITING'],
      ...NAMES.map((name, index) => [String(index + 1), name, `${5 * (index + 1)}s`]),
    ]);
  });

  test('lock history: wide names and a wide reason', () => {
    const events = NAMES.map((name, index) =>
      event(name, NAMES[(index + 2) % NAMES.length] as string, index),
    );
    const table = formatHistory(events);
    assertAligned(table, [
      ['AT', 'TYPE', 'SERVICE', 'WHO', 'HELD FOR', 'REASON'],
      ...events.map((e, index) => [
        `${e.at.slice(0, 19).replace('T', ' ')}Z`,
        e.type,
        e.service,
        e.who,
        e.heldSeconds === null ? '-' : `${e.heldSeconds}s`,
        index === 2 ? '因为 🚀 e\u0301' : '-',
      ]),
    ]);
  });

  test('token list: a wide token name', () => {
    const table = formatTokens([
      { name: '部署机器人', scopes: ['lock:write'], services: ['部署-*'] },
      { name: 'ci', scopes: ['lock:read', 'lock:write'] },
    ]);
    assertAligned(table, [
      ['NAME', 'SCOPES', 'SERVICES', 'CREATED'],
      ['部署机器人', 'lock:write', '部署-*', '-'],
      ['ci', 'lock:read,lock:write', '(all)', '-'],
    ]);
  });

  test('control characters are shown escaped, and their escapes are measured as printed', () => {
    const table = formatLockTable([lock('a\u001b[31mred', '部署', 0), lock('b', 'c', 1)], NOW);
    assertAligned(table, [
      ['SERVICE', 'WHO', 'AGE', 'EXPIRES IN', 'TOKEN', 'WAITERS'],
      ['a\\u001b[31mred', '部署', '1m', '9m', '1', '0'],
      ['b', 'c', '1m 1s', '9m', '2', '1'],
    ]);
  });
});
