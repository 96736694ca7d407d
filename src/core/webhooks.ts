import { type Caller, globToRegExp, requireScope } from './auth.js';
import type { Clock } from './clock.js';
import { ErrorCode, invalidArgument, permissionDenied, TrackerError } from './errors.js';
import {
  CONTROL_CHARACTERS,
  LOCK_EVENT_TYPES,
  type LockEventRecord,
  MAX_LINK_LENGTH,
  MAX_NAME_LENGTH,
  MAX_TTL_SECONDS,
  normalizeName,
  parseLink,
} from './lock.js';
import type { LockStore } from './lock-store.js';
import { validateName } from './names.js';

/**
 * Webhooks: the history (and two alerts) POSTed to a receiver, at least once, in order.
 *
 * Each webhook has a cursor in the store: the last history event it has handled. A delivery
 * round, on any replica, first claims the webhook in the store (so one replica delivers a
 * given webhook at a time, and each event is sent by one replica), then sends the events
 * after its cursor one by one, moving the cursor past each one the receiver took (any 2xx)
 * or that the webhook does not want. A refusal, a timeout or an unreachable receiver stops
 * the round: the webhook is tried again after a backoff that doubles from 1 s up to 10 min,
 * and an event still refused 24 h after its first failure is dropped (counted). Since the
 * cursor moves only after the receiver answered, a replica that dies mid-delivery leaves the
 * event to be sent again (the same `X-Tracker-Delivery` id: receivers dedupe on it).
 *
 * Two alerts come from the live state, not the history: `held-too-long` (a lock held longer
 * than the webhook's `alertAfterSeconds`) and `waited-too-long` (a request in line that
 * long), each sent once per lock or request and webhook.
 */

export const WEBHOOK_ALERTS = ['held-too-long', 'waited-too-long'] as const;
export type WebhookAlert = (typeof WEBHOOK_ALERTS)[number];
export const WEBHOOK_EVENT_TYPES = [...LOCK_EVENT_TYPES, ...WEBHOOK_ALERTS] as const;
export type WebhookEventType = (typeof WEBHOOK_EVENT_TYPES)[number];
export const WEBHOOK_FORMATS = ['json', 'slack'] as const;
export type WebhookFormat = (typeof WEBHOOK_FORMATS)[number];

export const MIN_SECRET_LENGTH = 16;
export const MAX_SECRET_LENGTH = 256;
/** A webhook's URL is a link: the same rules (parseLink), the same bound. */
export const MAX_WEBHOOK_URL_LENGTH = MAX_LINK_LENGTH;
/** Longest the delivery of one event may take before it counts as a failure. */
export const DELIVERY_TIMEOUT_MS = 10_000;
/** How long an event is retried before it is dropped. */
export const RETRY_FOR_MS = 24 * 3600 * 1000;
const FIRST_BACKOFF_MS = 1000;
const MAX_BACKOFF_MS = 10 * 60 * 1000;

/** What a webhook is, as an admin declares it. */
export interface WebhookSpec {
  readonly name: string;
  readonly url: string;
  readonly secret: string;
  readonly events: readonly WebhookEventType[];
  /** Only events of services matching this glob (`*` any characters, `?` one); null: all. */
  readonly services: string | null;
  readonly format: WebhookFormat;
  /** For the alerts: how long is too long, in seconds; null: no alerts. */
  readonly alertAfterSeconds: number | null;
}

/** Where a webhook's delivery stands. */
export interface WebhookState {
  /** The last history event handled (delivered, or not wanted). */
  readonly cursor: number;
  /** Consecutive failed attempts; 0 after a success. */
  readonly failures: number;
  /** When the event now failing first failed; null while nothing fails. */
  readonly failingSince: Date | null;
  /** No attempt before this (the backoff); null: at once. */
  readonly nextAttemptAt: Date | null;
  /** The receiver's last HTTP status; null before any attempt, or when none came back. */
  readonly lastStatus: number | null;
  readonly lastError: string | null;
  readonly lastAttemptAt: Date | null;
  readonly lastSuccessAt: Date | null;
  /** Deliveries the receiver took, and events dropped after 24 h of failures. */
  readonly delivered: number;
  readonly dropped: number;
}

export interface Webhook extends WebhookSpec, WebhookState {
  readonly createdAt: Date;
  readonly updatedAt: Date;
}

/** A lock held, or a request waiting, too long: what an alert is about. */
export interface AlertSubject {
  /** The lock's id (for a request: the id its lock will get). */
  readonly id: string;
  readonly service: string;
  readonly who: string;
  readonly owner: string | null;
  /** When it was acquired (or joined the line). */
  readonly since: Date;
  readonly note: string | null;
  readonly link: string | null;
}

/** What a delivery round records (the whole state), only while the round still holds its claim. */
export type WebhookProgress = WebhookState;

/** The webhooks' part of a store (both stores implement it; see the contract suite). */
export interface WebhookStore {
  /**
   * Creates the webhook with its cursor at `cursor` (events after it are delivered), or
   * replaces its spec keeping its cursor and state.
   */
  putWebhook(spec: WebhookSpec, cursor: number): Promise<{ webhook: Webhook; created: boolean }>;
  getWebhook(name: string): Promise<Webhook | null>;
  listWebhooks(): Promise<Webhook[]>;
  /** Deletes it and its alerts; false when there was none. */
  deleteWebhook(name: string): Promise<boolean>;
  /**
   * Claims the webhook for `owner` for `leaseMs` when nobody else holds an unexpired claim and
   * it is due (no backoff pending); the webhook, or null.
   */
  claimWebhook(name: string, owner: string, leaseMs: number): Promise<Webhook | null>;
  /** Records progress and extends the claim, if `owner` still holds it; false otherwise. */
  recordWebhook(name: string, owner: string, progress: WebhookProgress, leaseMs: number): Promise<boolean>;
  /** Ends `owner`'s claim (the next round, on any replica, may claim it at once). */
  releaseWebhook(name: string, owner: string): Promise<void>;
  /**
   * Locks held (`held-too-long`) or requests waiting (`waited-too-long`) since `before` or
   * earlier, of services matching `services`, not yet alerted to this webhook; oldest first.
   */
  dueAlerts(
    name: string,
    kind: WebhookAlert,
    before: Date,
    services: string | null,
    limit: number,
  ): Promise<AlertSubject[]>;
  /** Notes that `subject` was alerted to the webhook (so it never is again). */
  markAlerted(name: string, kind: WebhookAlert, subject: string): Promise<void>;
  /** Forgets the alerts of locks and requests that are gone. */
  pruneAlerts(name: string): Promise<void>;
}

/** The glob as a SQL LIKE pattern (escape `\`), for PostgreSQL. */
export function globToLike(glob: string): string {
  return [...glob]
    .map((char) => (char === '*' ? '%' : char === '?' ? '_' : /[%_\\]/.test(char) ? `\\${char}` : char))
    .join('');
}

const invalid = invalidArgument;

/**
 * Checks a webhook as declared; the URL's address is checked by the caller (it needs DNS).
 * Throws INVALID_ARGUMENT naming the field.
 */
export function validateWebhook(raw: {
  name: string;
  url: unknown;
  secret: unknown;
  events: unknown;
  services?: unknown;
  format?: unknown;
  alertAfterSeconds?: unknown;
}): WebhookSpec {
  const name = validateName('name', raw.name);
  // The rules of a lock's link: absolute http(s), no credentials, no spaces or controls.
  const url = typeof raw.url === 'string' ? parseLink(raw.url) : null;
  if (url === null) {
    throw invalid('url', 'url must be an absolute http:// or https:// URL without credentials');
  }
  const secret = raw.secret;
  if (
    typeof secret !== 'string' ||
    secret.length < MIN_SECRET_LENGTH ||
    secret.length > MAX_SECRET_LENGTH ||
    CONTROL_CHARACTERS.test(secret)
  ) {
    throw invalid(
      'secret',
      `secret must be ${MIN_SECRET_LENGTH} to ${MAX_SECRET_LENGTH} printable characters`,
    );
  }
  const events = raw.events;
  if (
    !Array.isArray(events) ||
    events.length === 0 ||
    !events.every((type) => (WEBHOOK_EVENT_TYPES as readonly unknown[]).includes(type))
  ) {
    throw invalid('events', `events must list some of ${WEBHOOK_EVENT_TYPES.join(', ')}`);
  }
  const services = raw.services ?? null;
  if (
    services !== null &&
    (typeof services !== 'string' ||
      services === '' ||
      [...services].length > MAX_NAME_LENGTH ||
      CONTROL_CHARACTERS.test(services))
  ) {
    throw invalid('services', 'services must be a glob of service names (* any characters, ? one)');
  }
  const format = raw.format ?? 'json';
  if (!(WEBHOOK_FORMATS as readonly unknown[]).includes(format)) {
    throw invalid('format', `format must be one of ${WEBHOOK_FORMATS.join(', ')}`);
  }
  const alertAfterSeconds = raw.alertAfterSeconds ?? null;
  if (
    alertAfterSeconds !== null &&
    (typeof alertAfterSeconds !== 'number' ||
      !Number.isSafeInteger(alertAfterSeconds) ||
      alertAfterSeconds < 1 ||
      alertAfterSeconds > MAX_TTL_SECONDS)
  ) {
    throw invalid('alertAfterSeconds', `alertAfterSeconds must be an integer from 1 to ${MAX_TTL_SECONDS}`);
  }
  const unique = [...new Set(events as WebhookEventType[])];
  if (
    alertAfterSeconds === null &&
    unique.some((type) => (WEBHOOK_ALERTS as readonly string[]).includes(type))
  ) {
    throw invalid('alertAfterSeconds', 'alertAfterSeconds is required with held-too-long or waited-too-long');
  }
  return {
    name,
    url,
    secret,
    events: unique,
    services: services as string | null,
    format: format as WebhookFormat,
    alertAfterSeconds: alertAfterSeconds as number | null,
  };
}

/** One delivery as sent: its id, its type, and the body. */
export interface Delivery {
  readonly id: string;
  readonly type: WebhookEventType;
  readonly body: string;
}

/** What the receiver answered: its status, or why none came. */
export type SendResult = { readonly status: number } | { readonly error: string };

/** Sends one POST; the transport (fetch, with no redirects and a timeout) is injected. */
export type Send = (
  url: string,
  headers: Readonly<Record<string, string>>,
  body: string,
) => Promise<SendResult>;

/** `sha256=<hex>`: the HMAC-SHA256 of the raw body with the secret (GitHub's scheme); injected (node:crypto). */
export type Sign = (secret: string, body: string) => string;

export interface DelivererOptions {
  readonly store: Pick<LockStore, 'webhooks' | 'readEvents'>;
  readonly clock: Clock;
  /** This process, as it claims webhooks. */
  readonly owner: string;
  readonly send: Send;
  readonly sign: Sign;
  /** null when the URL may be delivered to; else why not (a private address, DNS failing). */
  readonly checkUrl: (url: string) => Promise<string | null>;
  /** The JSON of an event (the REST EventJson) and of an alert's subject. */
  readonly present: {
    event(event: LockEventRecord): unknown;
    alert(kind: WebhookAlert, subject: AlertSubject, seconds: number): unknown;
  };
  /** Between rounds, in ms (default 500). */
  readonly intervalMs?: number;
  /** Each delivery attempt's outcome (metrics). */
  readonly onAttempt?: (webhook: string, ok: boolean) => void;
  readonly onError: (error: unknown) => void;
}

/** Events read per round and webhook. */
const BATCH = 100;
/**
 * How long a claim lasts without progress: a replica that died mid-round loses it then. Each
 * attempt renews it first, and one attempt takes at most DELIVERY_TIMEOUT_MS.
 */
const LEASE_MS = DELIVERY_TIMEOUT_MS + 5000;

/** The delivery loop of one process; `kick` runs a round soon, `stop` ends it. */
export function startWebhookDelivery(options: DelivererOptions) {
  const intervalMs = options.intervalMs ?? 500;
  const { store, clock, owner } = options;
  const hooks = store.webhooks;
  let stopped = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let running: Promise<void> | null = null;
  let again = false;

  const schedule = (ms: number) => {
    if (stopped) return;
    clearTimeout(timer);
    timer = setTimeout(run, ms);
    // Never keeps the process alive. (Typed for a browser too: the dashboard's build type-checks
    // the schemas, which take this module's limits.)
    (timer as unknown as { unref?: () => void }).unref?.();
  };
  const run = () => {
    if (running) {
      again = true;
      return;
    }
    running = round()
      .catch(options.onError)
      .finally(() => {
        running = null;
        schedule(again ? 0 : intervalMs);
        again = false;
      });
  };

  /**
   * Webhooks the last round found in the store. While there are none, news of events starts
   * no round (a lock change would cost a read of the webhooks table): the next periodic
   * round, or a put's `refresh`, finds the first one.
   */
  let known = 0;

  /** Every due webhook at once: a receiver that hangs (up to its timeout) holds back no other. */
  async function round(): Promise<void> {
    const now = clock.now().getTime();
    const listed = await hooks.listWebhooks();
    known = listed.length;
    const due = listed.filter(
      (listed) => listed.nextAttemptAt === null || listed.nextAttemptAt.getTime() <= now,
    );
    await Promise.all(
      due.map(async (listed) => {
        if (stopped) return;
        const webhook = await hooks.claimWebhook(listed.name, owner, LEASE_MS);
        if (!webhook) return;
        try {
          await deliver(webhook);
        } finally {
          await hooks.releaseWebhook(webhook.name, owner);
        }
      }),
    );
  }

  async function deliver(webhook: Webhook): Promise<void> {
    let state: WebhookProgress = { ...webhook };
    const record = async (next: WebhookProgress) => {
      state = next;
      return hooks.recordWebhook(webhook.name, owner, next, LEASE_MS);
    };
    /** Sends one delivery; true when the receiver took it (the round goes on). */
    const attempt = async (delivery: Delivery, onTaken: (taken: WebhookProgress) => WebhookProgress) => {
      // The claim, renewed for this attempt; lost (the lease ran out meanwhile): stop here.
      if (!(await record(state))) return false;
      const at = clock.now();
      const refused = await options.checkUrl(webhook.url);
      const result: SendResult = refused
        ? { error: refused }
        : await options.send(webhook.url, headersOf(webhook, delivery, options.sign), delivery.body);
      const ok = 'status' in result && result.status >= 200 && result.status < 300;
      options.onAttempt?.(webhook.name, ok);
      const lastStatus = 'status' in result ? result.status : null;
      // The event is done with (taken, or dropped): the round goes on with the next.
      const settled = (outcome: Partial<WebhookProgress>) =>
        record(
          onTaken({
            ...state,
            failures: 0,
            failingSince: null,
            nextAttemptAt: null,
            lastStatus,
            lastAttemptAt: at,
            ...outcome,
          }),
        );
      if (ok) return settled({ lastError: null, lastSuccessAt: at, delivered: state.delivered + 1 });
      const failures = state.failures + 1;
      const failingSince = state.failingSince ?? at;
      const lastError = 'error' in result ? result.error : `the receiver answered ${result.status}`;
      // Refused for 24 h: dropped.
      if (at.getTime() - failingSince.getTime() >= RETRY_FOR_MS) {
        return settled({ lastError, dropped: state.dropped + 1 });
      }
      const backoff = Math.min(MAX_BACKOFF_MS, FIRST_BACKOFF_MS * 2 ** Math.min(failures - 1, 20));
      await record({
        ...state,
        failures,
        failingSince,
        nextAttemptAt: new Date(at.getTime() + backoff),
        lastStatus,
        lastError,
        lastAttemptAt: at,
      });
      return false;
    };

    // The alerts first: they are about now.
    if (webhook.alertAfterSeconds !== null) {
      await hooks.pruneAlerts(webhook.name);
      for (const kind of WEBHOOK_ALERTS) {
        if (!webhook.events.includes(kind)) continue;
        const before = new Date(clock.now().getTime() - webhook.alertAfterSeconds * 1000);
        for (const subject of await hooks.dueAlerts(webhook.name, kind, before, webhook.services, BATCH)) {
          const seconds = Math.floor((clock.now().getTime() - subject.since.getTime()) / 1000);
          const delivery: Delivery = {
            id: `${webhook.name}.${kind}.${subject.id}`,
            type: kind,
            body: bodyOf(webhook, kind, options.present.alert(kind, subject, seconds), () =>
              alertLine(kind, subject, seconds),
            ),
          };
          if (!(await attempt(delivery, (taken) => taken))) return;
          await hooks.markAlerted(webhook.name, kind, subject.id);
        }
      }
    }
    // Then the history, in order, from the cursor.
    for (let page = 0; page < 10 && !stopped; page++) {
      const events = await store.readEvents(state.cursor, BATCH);
      if (events.length === 0) return;
      for (const event of events) {
        if (!wants(webhook, event)) {
          // Passed over in memory; written with the next attempt, or at the end of the page.
          state = { ...state, cursor: event.id };
          continue;
        }
        const delivery: Delivery = {
          id: `${webhook.name}.${event.id}`,
          type: event.type,
          body: bodyOf(webhook, event.type, options.present.event(event), () => eventLine(event)),
        };
        if (!(await attempt(delivery, (taken) => ({ ...taken, cursor: event.id })))) return;
      }
      if (!(await record(state))) return;
      if (events.length < BATCH) return;
    }
  }

  schedule(0);
  return {
    /** New events: a round soon, if any webhook may want them. */
    kick(): void {
      if (known > 0) this.refresh();
    },
    /** A round soon, whatever the last one found (a webhook was put). */
    refresh(): void {
      if (running) again = true;
      else schedule(0);
    },
    async stop(): Promise<void> {
      stopped = true;
      clearTimeout(timer);
      await running;
    },
  };
}

/** Whether the webhook wants this history event. */
function wants(webhook: WebhookSpec, event: LockEventRecord): boolean {
  return (
    webhook.events.includes(event.type) &&
    (webhook.services === null || globToRegExp(webhook.services).test(event.service))
  );
}

function headersOf(webhook: WebhookSpec, delivery: Delivery, sign: Sign): Record<string, string> {
  return {
    'content-type': 'application/json',
    'user-agent': 'Tracker-Webhook/1',
    'x-tracker-event': delivery.type,
    'x-tracker-delivery': delivery.id,
    'x-tracker-webhook': webhook.name,
    'x-tracker-signature-256': sign(webhook.secret, delivery.body),
  };
}

/** JSON: `{webhook, event, delivery, data}`; Slack: `{text}`, one readable line. */
function bodyOf(webhook: WebhookSpec, type: WebhookEventType, data: unknown, line: () => string): string {
  return webhook.format === 'slack'
    ? JSON.stringify({ text: line() })
    : JSON.stringify({ webhook: webhook.name, event: type, data });
}

const about = (note: string | null, link: string | null) =>
  `${note === null ? '' : ` — ${note}`}${link === null ? '' : ` (${link})`}`;

/** `production-deployment: acquired by ci-1234 — v2.3 to prod (https://…)`. */
export function eventLine(event: LockEventRecord): string {
  const by = event.stolenBy ? `, taken by ${event.stolenBy.who}` : '';
  const reason = event.reason && event.type !== 'dequeued' ? ` (reason: ${event.reason})` : '';
  return `Tracker: ${event.service}: ${event.type} by ${event.who}${by}${reason}${about(event.note, event.link)}`;
}

export function alertLine(kind: WebhookAlert, subject: AlertSubject, seconds: number): string {
  const what = kind === 'held-too-long' ? 'held by' : 'waited for by';
  return `Tracker: ${subject.service}: ${what} ${subject.who} for ${Math.floor(seconds / 60)} min${about(subject.note, subject.link)}`;
}

/** A webhook admin action needs lock:admin over every service (a webhook sees them all). */
export function requireWebhookAdmin(caller: Caller): void {
  requireScope(caller, 'lock:admin');
  if (caller.kind === 'token' && caller.services !== null) {
    throw permissionDenied(
      'webhooks see every service: a token limited to some services may not manage them',
    );
  }
}

/** The webhooks' admin operations (PUT, GET, DELETE /webhooks/{name}): lock:admin over every service. */
export function createWebhookAdmin(deps: {
  readonly store: Pick<LockStore, 'webhooks' | 'eventCursor' | 'readEvents'>;
  readonly clock: Clock;
  /** null when the URL may be delivered to; else why not. */
  readonly checkUrl: (url: string) => Promise<string | null>;
  /** A webhook was created or replaced: deliver soon. */
  readonly onChange: () => void;
}) {
  const { store } = deps;
  const notFound = () => new TrackerError(ErrorCode.WEBHOOK_NOT_FOUND, 'no webhook has that name');
  /** The webhook with how far behind it is: events after its cursor (up to 1000), the oldest one's age. */
  const withLag = async (webhook: Webhook): Promise<WebhookStatus> => {
    const pending = await store.readEvents(webhook.cursor, 1000);
    const oldest = pending[0];
    const lagSeconds = oldest ? Math.max(0, (deps.clock.now().getTime() - oldest.at.getTime()) / 1000) : 0;
    return { webhook, pending: pending.length, lagSeconds };
  };
  return {
    async put(caller: Caller, raw: Parameters<typeof validateWebhook>[0]) {
      requireWebhookAdmin(caller);
      const spec = validateWebhook(raw);
      const refused = await deps.checkUrl(spec.url);
      if (refused) throw invalidArgument('url', refused);
      // A new webhook starts with the events after now; a replaced one keeps its cursor.
      const { webhook, created } = await store.webhooks.putWebhook(spec, await store.eventCursor());
      deps.onChange();
      return { status: await withLag(webhook), created };
    },
    async get(caller: Caller, name: string): Promise<WebhookStatus> {
      requireWebhookAdmin(caller);
      const webhook = await store.webhooks.getWebhook(normalizeName(name));
      if (!webhook) throw notFound();
      return withLag(webhook);
    },
    async list(caller: Caller): Promise<WebhookStatus[]> {
      requireWebhookAdmin(caller);
      return Promise.all((await store.webhooks.listWebhooks()).map(withLag));
    },
    async delete(caller: Caller, name: string): Promise<void> {
      requireWebhookAdmin(caller);
      if (!(await store.webhooks.deleteWebhook(normalizeName(name)))) throw notFound();
    },
  };
}

/** A webhook and how far behind its delivery is. */
export interface WebhookStatus {
  readonly webhook: Webhook;
  /** History events after its cursor, counted up to 1000. */
  readonly pending: number;
  /** The age of the oldest of them, in seconds; 0 when none. */
  readonly lagSeconds: number;
}

export type WebhookAdmin = ReturnType<typeof createWebhookAdmin>;
