/** What main tells the heartbeat to renew, passed as JSON in one environment variable. */
export interface HeartbeatTarget {
  readonly kind: 'lock' | 'group';
  /** The lock id, or the group id. */
  readonly id: string;
  /** The shortest lease of what was granted: renewed every third of it. */
  readonly ttlSeconds: number;
  /** How many locks were granted: a group renewed with fewer has lost one. */
  readonly size: number;
}

export const HEARTBEAT_ENV = 'TRACKER_ACTION_HEARTBEAT';

export function heartbeatTarget(env: NodeJS.ProcessEnv = process.env): HeartbeatTarget {
  const text = env[HEARTBEAT_ENV];
  if (!text)
    throw new Error(`${HEARTBEAT_ENV} is not set: the heartbeat is started by the action's main step`);
  const target = JSON.parse(text) as HeartbeatTarget;
  if (
    (target.kind !== 'lock' && target.kind !== 'group') ||
    typeof target.id !== 'string' ||
    !(target.ttlSeconds > 0) ||
    !(target.size > 0)
  ) {
    throw new Error(`${HEARTBEAT_ENV} is not a heartbeat target: ${text}`);
  }
  return target;
}
