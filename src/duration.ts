/**
 * Durations as people write them, shared by the server's flags, the SDK and the CLI:
 * `90s`, `30m`, `1h30m`, `2d`, or plain seconds.
 */

/** `90s`, `30m`, `1h30m`, `2d` or plain seconds → seconds; empty → null. */
export function parseDurationSeconds(text: string): number | null {
  if (/^\d{1,9}$/.test(text)) return Number(text);
  const match = /^(?:(\d{1,6})d)?(?:(\d{1,7})h)?(?:(\d{1,9})m)?(?:(\d{1,9})s)?$/.exec(text);
  if (!match || text === '') return null;
  const [, days = '0', hours = '0', minutes = '0', seconds = '0'] = match;
  return Number(days) * 86_400 + Number(hours) * 3600 + Number(minutes) * 60 + Number(seconds);
}
