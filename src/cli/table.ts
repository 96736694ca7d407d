import stringWidth from 'string-width';
import type { LockEvent, LockInfo, QueueInfo, ResourceInfo } from '../sdk/index.js';

/**
 * C0 and C1 controls, DEL, and the invisible marks that reorder or hide text (bidi
 * overrides and isolates, zero-width characters, the BOM).
 */
const UNPRINTABLE =
  // biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point.
  /[\u0000-\u001f\u007f-\u009f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]/gu;

/**
 * User text (names, holders, reasons) made safe for a terminal: every control or invisible
 * character is shown as its `\u001b` escape, so that nothing printed can move the cursor,
 * change colours, reorder a line or hide a part of it.
 */
export function printable(text: string): string {
  return text.replace(
    UNPRINTABLE,
    (char) => `\\u${(char.codePointAt(0) ?? 0).toString(16).padStart(4, '0')}`,
  );
}

/** `3m 12s`, `2h 5m`, `4d 1h`: two units at most. */
export function humanDuration(ms: number): string {
  const seconds = Math.max(0, Math.round(ms / 1000));
  const units: Array<[string, number]> = [
    ['d', 86_400],
    ['h', 3600],
    ['m', 60],
    ['s', 1],
  ];
  const parts: string[] = [];
  let rest = seconds;
  for (const [unit, size] of units) {
    if (rest >= size || (unit === 's' && parts.length === 0)) {
      parts.push(`${Math.floor(rest / size)}${unit}`);
      rest %= size;
    }
    if (parts.length === 2) break;
  }
  return parts.join(' ');
}

/**
 * Aligned columns; every cell is user text, shown printable. Cells are measured and padded
 * by the columns they take on a terminal, not by their UTF-16 length: a CJK character or an
 * emoji takes two columns, a combining accent none.
 */
function aligned(rawRows: string[][]): string {
  const rows = rawRows.map((row) =>
    row.map((cell) => {
      const text = printable(cell);
      return { text, width: stringWidth(text) };
    }),
  );
  const widths = rows[0]?.map((_, column) => Math.max(...rows.map((row) => row[column]?.width ?? 0))) ?? [];
  return rows
    .map((row) =>
      row
        .map((cell, column) => cell.text + ' '.repeat(Math.max(0, (widths[column] ?? 0) - cell.width)))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

/**
 * Service, who, age, expires in, token (the fencing token), waiters: one aligned row per
 * lock; owner (the name of the bearer token that took it) when the server has
 * authentication on; note and link when some lock has one (the note last: it is the
 * longest).
 */
export function formatLockTable(locks: readonly LockInfo[], now: number): string {
  if (locks.length === 0) return 'no locks held';
  const owners = locks.some((lock) => lock.owner !== null && lock.owner !== undefined);
  const links = locks.some((lock) => lock.link !== null);
  const notes = locks.some((lock) => lock.note !== null);
  return aligned([
    [
      'SERVICE',
      'WHO',
      'AGE',
      'EXPIRES IN',
      'TOKEN',
      'WAITERS',
      ...(owners ? ['OWNER'] : []),
      ...(links ? ['LINK'] : []),
      ...(notes ? ['NOTE'] : []),
    ],
    ...locks.map((lock) => [
      lock.service,
      lock.who,
      humanDuration(now - Date.parse(lock.createdAt)),
      lock.expiresAt === null ? 'never' : humanDuration(Date.parse(lock.expiresAt) - now),
      String(lock.fencingToken),
      String(lock.waiters),
      ...(owners ? [lock.owner ?? '-'] : []),
      ...(links ? [lock.link ?? '-'] : []),
      ...(notes ? [lock.note ?? '-'] : []),
    ]),
  ]);
}

/** A holder's note and link, for a line about it: ` — note (link)`, or nothing. */
export function about(lock: Pick<LockInfo, 'note' | 'link'>): string {
  const parts = [
    lock.note === null ? '' : printable(lock.note),
    lock.link === null ? '' : `(${printable(lock.link)})`,
  ];
  const text = parts.filter((part) => part !== '').join(' ');
  return text === '' ? '' : ` — ${text}`;
}

export function formatQueue(queue: QueueInfo, now: number): string {
  const service = printable(queue.service);
  // A semaphore or shared holders: the oldest holder, and how many more hold it with them.
  const others = queue.holders.length > 1 ? ` and ${queue.holders.length - 1} more` : '';
  const holder = queue.holder
    ? `${service} is held by ${printable(queue.holder.who)} for ${humanDuration(now - Date.parse(queue.holder.createdAt))} (lock ${printable(queue.holder.id)})${others}${about(queue.holder)}`
    : `${service} is free`;
  if (queue.waiters.length === 0) return `${holder}\nnobody waiting`;
  const notes = queue.waiters.some((waiter) => waiter.note !== null);
  // Priority, mode and what a waiter came through (a label, a group): only when some differ.
  const detailed = queue.waiters.some(
    (waiter) =>
      waiter.priority !== 0 ||
      waiter.mode !== 'exclusive' ||
      waiter.label !== null ||
      waiter.groupId !== null,
  );
  return `${holder}\n${aligned([
    [
      'POSITION',
      'WHO',
      'WAITING',
      ...(detailed ? ['PRIORITY', 'MODE', 'VIA'] : []),
      ...(notes ? ['NOTE'] : []),
    ],
    ...queue.waiters.map((waiter) => [
      String(waiter.position),
      waiter.who,
      humanDuration(now - Date.parse(waiter.since)),
      ...(detailed
        ? [
            String(waiter.priority),
            waiter.mode,
            waiter.label !== null
              ? `label ${waiter.label}`
              : waiter.groupId !== null
                ? `group ${waiter.groupId}`
                : '-',
          ]
        : []),
      ...(notes ? [waiter.note ?? '-'] : []),
    ]),
  ])}`;
}

/** Name, capacity, free, holders, waiters, labels: one aligned row per resource. */
export function formatResources(resources: readonly ResourceInfo[]): string {
  if (resources.length === 0) return 'no resources';
  return aligned([
    ['NAME', 'CAPACITY', 'FREE', 'HOLDERS', 'WAITERS', 'LABELS'],
    ...resources.map((resource) => [
      resource.name,
      String(resource.capacity),
      String(resource.free),
      String(resource.holders.length),
      String(resource.waiters.length),
      resource.labels.length === 0 ? '-' : resource.labels.join(','),
    ]),
  ]);
}

/** One resource: its row, its description and properties, then its holders' table. */
export function formatResource(resource: ResourceInfo, now: number): string {
  const lines = [formatResources([resource])];
  if (resource.description !== null) lines.push(`description: ${printable(resource.description)}`);
  const properties = Object.entries(resource.properties);
  if (properties.length > 0) {
    lines.push('properties:', ...properties.map(([key, value]) => `  ${printable(key)}=${printable(value)}`));
  }
  if (resource.holders.length > 0) lines.push('', formatLockTable(resource.holders, now));
  return lines.join('\n');
}

/** `2026-11-26 17:03:12Z`: UTC, whole seconds. */
function when(at: string): string {
  const time = new Date(at);
  return Number.isNaN(time.getTime()) ? at : `${time.toISOString().slice(0, 19).replace('T', ' ')}Z`;
}

/**
 * At, type, service, who, held for, reason (and the lock's note when some event has one): one
 * aligned row per event, newest first.
 */
export function formatHistory(events: readonly LockEvent[]): string {
  if (events.length === 0) return 'no events';
  const notes = events.some((event) => event.lock.note !== null);
  return aligned([
    ['AT', 'TYPE', 'SERVICE', 'WHO', 'HELD FOR', 'REASON', ...(notes ? ['NOTE'] : [])],
    ...events.map((event) => [
      when(event.at),
      event.type,
      event.service,
      event.who,
      event.heldSeconds === null ? '-' : humanDuration(event.heldSeconds * 1000),
      event.reason ?? '-',
      ...(notes ? [event.lock.note ?? '-'] : []),
    ]),
  ]);
}

/** Name, scopes, services, created: one aligned row per token (never its hash). */
export function formatTokens(
  tokens: ReadonlyArray<{
    readonly name: string;
    readonly scopes: readonly string[];
    readonly services?: readonly string[] | undefined;
    readonly createdAt?: string | undefined;
    readonly certificateSubject?: string | undefined;
  }>,
): string {
  if (tokens.length === 0) return 'no tokens';
  // The CERTIFICATE column only when some entry has a client-certificate subject.
  const certificates = tokens.some((token) => token.certificateSubject !== undefined);
  return aligned([
    ['NAME', 'SCOPES', 'SERVICES', 'CREATED', ...(certificates ? ['CERTIFICATE'] : [])],
    ...tokens.map((token) => [
      token.name,
      token.scopes.join(','),
      token.services ? token.services.join(',') : '(all)',
      token.createdAt ? when(token.createdAt) : '-',
      ...(certificates ? [token.certificateSubject ?? '-'] : []),
    ]),
  ]);
}
