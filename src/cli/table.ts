import type { LockInfo, QueueInfo } from '../sdk/index.js';

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

function aligned(rows: string[][]): string {
  const widths =
    rows[0]?.map((_, column) => Math.max(...rows.map((row) => (row[column] ?? '').length))) ?? [];
  return rows
    .map((row) =>
      row
        .map((cell, column) => cell.padEnd(widths[column] ?? 0))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

/** Service, who, age, expires in, token, waiters: one aligned row per lock. */
export function formatLockTable(locks: readonly LockInfo[], now: number): string {
  if (locks.length === 0) return 'no locks held';
  return aligned([
    ['SERVICE', 'WHO', 'AGE', 'EXPIRES IN', 'TOKEN', 'WAITERS'],
    ...locks.map((lock) => [
      lock.service,
      lock.who,
      humanDuration(now - Date.parse(lock.createdAt)),
      lock.expiresAt === null ? 'never' : humanDuration(Date.parse(lock.expiresAt) - now),
      String(lock.fencingToken),
      String(lock.waiters),
    ]),
  ]);
}

export function formatQueue(queue: QueueInfo, now: number): string {
  const holder = queue.holder
    ? `${queue.service} is held by ${queue.holder.who} for ${humanDuration(now - Date.parse(queue.holder.createdAt))} (lock ${queue.holder.id})`
    : `${queue.service} is free`;
  if (queue.waiters.length === 0) return `${holder}\nnobody waiting`;
  return `${holder}\n${aligned([
    ['POSITION', 'WHO', 'WAITING'],
    ...queue.waiters.map((waiter) => [
      String(waiter.position),
      waiter.who,
      humanDuration(now - Date.parse(waiter.since)),
    ]),
  ])}`;
}
