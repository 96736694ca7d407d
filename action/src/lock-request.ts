/**
 * The action's inputs (action.yml) read into what to ask the server for: the claims, whether
 * they make a group, and the options every acquire takes. Also the client both steps and the
 * heartbeat use. Invalid inputs throw InputError, named by the input.
 */
import { type AcquireCommonOptions, type Claim, type LockMode, TrackerClient } from '../../src/sdk/index.js';
import { durationSeconds } from '../../src/sdk/tracker-client.js';
import { input } from './workflow-commands.js';

/** A lease long enough for a slow step between two renewals; the heartbeat renews it every third. */
export const DEFAULT_TTL = '10m';
/**
 * How long a job waits in line by default: long enough for the deployment ahead of it to
 * finish, short of the server's limit (1h) and of a job's own timeout.
 */
export const DEFAULT_WAIT = '30m';

const MAX_NAME_LENGTH = 256;

export class InputError extends Error {
  override readonly name = 'InputError';
}

export interface LockRequest {
  /** What the job asks for, for messages: `production-deployment`, `2 of label gpu`, ... */
  readonly what: string;
  /** Several claims (or `services`, or a quantity over 1): one group acquire, all or nothing. */
  readonly group: boolean;
  readonly claims: readonly Claim[];
  /** What every acquire takes: who, ttl, wait, priority. */
  readonly options: AcquireCommonOptions;
  /** The `wait` input as written (`30m`), for messages. */
  readonly wait: string;
}

/** The client of the `url` and `token` inputs (no token: the environment's TRACKER_TOKEN, if any). */
export function clientFromInputs(env: NodeJS.ProcessEnv = process.env): TrackerClient {
  const url = input('url', env);
  if (url === '')
    throw new InputError('the input url is required (the Tracker server, e.g. https://tracker.example.com)');
  const token = input('token', env);
  return new TrackerClient({ url, token: token === '' ? undefined : token });
}

/**
 * The job's default holder, readable on the dashboard and in `tracker lock list`:
 * `owner/repo/Workflow#run_id.attempt/job`. Undefined outside GitHub Actions (the SDK's
 * `user@host` then).
 */
export function defaultWho(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const { GITHUB_REPOSITORY, GITHUB_WORKFLOW, GITHUB_RUN_ID, GITHUB_RUN_ATTEMPT, GITHUB_JOB } = env;
  if (!GITHUB_REPOSITORY || !GITHUB_RUN_ID) return undefined;
  const who = `${GITHUB_REPOSITORY}/${GITHUB_WORKFLOW ?? ''}#${GITHUB_RUN_ID}.${GITHUB_RUN_ATTEMPT || '1'}/${GITHUB_JOB ?? ''}`;
  // The server takes names of up to 256 code points; a long workflow name is cut, not refused.
  return [...who].slice(0, MAX_NAME_LENGTH).join('');
}

/**
 * This run's URL, the lock's link: `GITHUB_SERVER_URL/owner/repo/actions/runs/ID/attempts/N`
 * (github.com or a GitHub Enterprise server); null outside a GitHub run.
 */
export function runUrl(env: NodeJS.ProcessEnv = process.env): string | null {
  const { GITHUB_SERVER_URL, GITHUB_REPOSITORY, GITHUB_RUN_ID, GITHUB_RUN_ATTEMPT } = env;
  if (!GITHUB_REPOSITORY || !GITHUB_RUN_ID || !/^https?:\/\//.test(GITHUB_SERVER_URL ?? '')) return null;
  return `${GITHUB_SERVER_URL}/${GITHUB_REPOSITORY}/actions/runs/${GITHUB_RUN_ID}/attempts/${GITHUB_RUN_ATTEMPT || '1'}`;
}

function integer(name: string, min: number, max: number, env: NodeJS.ProcessEnv): number | undefined {
  const text = input(name, env);
  if (text === '') return undefined;
  const value = /^-?\d{1,9}$/.test(text) ? Number(text) : Number.NaN;
  if (!(value >= min && value <= max)) {
    throw new InputError(`the input ${name} must be a whole number from ${min} to ${max}; got "${text}"`);
  }
  return value;
}

function duration(name: string, fallback: string, env: NodeJS.ProcessEnv): string {
  const text = input(name, env) || fallback;
  try {
    durationSeconds(text, name);
  } catch {
    throw new InputError(
      `the input ${name} must be whole seconds or a duration like 90s, 30m, 1h30m; got "${text}"`,
    );
  }
  return text;
}

/** The request the inputs describe. */
export function lockRequest(env: NodeJS.ProcessEnv = process.env): LockRequest {
  const service = input('service', env);
  const services = input('services', env)
    .split(/\r?\n/)
    .map((line) => line.trim())
    .filter((line) => line !== '');
  const label = input('label', env);
  if (service !== '' && services.length > 0) {
    throw new InputError('give service (one lock) or services (a group), not both');
  }
  if (service === '' && services.length === 0 && label === '') {
    throw new InputError('give service, services or label: what to lock');
  }
  if (service !== '' && label !== '') {
    throw new InputError('service and label together are a group: list the services in services, with label');
  }
  const quantity = integer('quantity', 1, 32, env);
  if (quantity !== undefined && label === '') throw new InputError('the input quantity goes with label');
  const mode = input('mode', env);
  if (mode !== '' && mode !== 'exclusive' && mode !== 'shared') {
    throw new InputError(`the input mode must be exclusive or shared; got "${mode}"`);
  }
  const lockMode = mode === '' ? undefined : (mode as LockMode);
  const limit = integer('limit', 1, 1000, env);
  if (limit !== undefined && mode === 'shared') {
    throw new InputError('the input limit applies to exclusive locks: not with mode shared');
  }
  if (limit !== undefined && service === '' && services.length === 0) {
    throw new InputError("the input limit applies to services: a resource's capacity is its limit");
  }
  const named = service === '' ? services : [service];
  const claims: Claim[] = [
    ...named.map((name) => ({ service: name, mode: lockMode, limit })),
    ...(label === '' ? [] : [{ label, mode: lockMode, quantity }]),
  ];
  const wait = duration('wait', DEFAULT_WAIT, env);
  const options: AcquireCommonOptions = {
    who: input('who', env) || defaultWho(env),
    ttl: duration('ttl', DEFAULT_TTL, env),
    wait,
    priority: integer('priority', -1000, 1000, env),
    ...(input('note', env) === '' ? {} : { note: input('note', env) }),
    ...(runUrl(env) === null ? {} : { link: runUrl(env) as string }),
  };
  const labelled = label === '' ? [] : [`${quantity ?? 1} of label ${label}`];
  return {
    what: [...named, ...labelled].join(', '),
    group: services.length > 0 || (quantity ?? 1) > 1,
    claims,
    options,
    wait,
  };
}
