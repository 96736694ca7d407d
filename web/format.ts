/** Durations and times as people read them in a table. */

/** 42s, 12m 03s, 3h 12m, 2d 4h. Negative durations count as zero. */
export function formatDuration(ms: number): string {
  const total = Math.max(0, Math.floor(ms / 1000));
  const days = Math.floor(total / 86_400);
  const hours = Math.floor((total % 86_400) / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const seconds = total % 60;
  if (days > 0) return `${days}d ${hours}h`;
  if (hours > 0) return `${hours}h ${pad(minutes)}m`;
  if (minutes > 0) return `${minutes}m ${pad(seconds)}s`;
  return `${seconds}s`;
}

/** A duration given in seconds (heldSeconds), with sub-second precision for short holds. */
export function formatSeconds(seconds: number | null): string {
  if (seconds === null) return '';
  if (seconds < 10) return `${(Math.round(seconds * 10) / 10).toString()}s`;
  return formatDuration(seconds * 1000);
}

function pad(value: number): string {
  return value < 10 ? `0${value}` : String(value);
}

const dayOnly = new Intl.DateTimeFormat(undefined, { weekday: 'short', day: 'numeric', month: 'short' });

/** Local date and time to the second, unambiguous in every locale: 2026-11-26 17:05:09. */
export function formatDateTime(ms: number): string {
  if (!Number.isFinite(ms)) return '';
  const at = new Date(ms);
  return (
    `${at.getFullYear()}-${pad(at.getMonth() + 1)}-${pad(at.getDate())} ` +
    `${pad(at.getHours())}:${pad(at.getMinutes())}:${pad(at.getSeconds())}`
  );
}

/** Axis labels of the timeline: weekday and date for a week, hours and minutes otherwise. */
export function formatAxis(ms: number, spanMs: number): string {
  if (spanMs > 36 * 3600_000) return dayOnly.format(ms);
  const at = new Date(ms);
  return `${pad(at.getHours())}:${pad(at.getMinutes())}`;
}
