/**
 * Fuzzing (issue 7, point 5). fast-check throws random and hostile input at every REST route
 * and every gRPC method of one real server process (a SQLite file in a temporary folder):
 * wrong JSON types, missing and unknown fields, huge strings and bodies, unicode edge cases,
 * path tricks, duplicate JSON keys, invalid JSON, wrong content types, bad UUIDs, hostile
 * numbers, random query strings and headers, raw HTTP bytes, raw protobuf bytes.
 *
 * Properties: never a 5xx, never a crash (the process is alive and /healthz answers after
 * every test, and it logged no error), every error is JSON with a `code`, and wherever the
 * README says what the answer is, the answer is exactly that (an oracle in this file decides
 * valid or not from the same rules). gRPC never answers INTERNAL or UNKNOWN to well-formed
 * protobuf. Afterwards the store's invariants are checked through the API.
 *
 * Runs are reproducible: the seed is fixed (TRACKER_FUZZ_SEED=<n> picks another, =random a
 * random one); fast-check prints the seed, the path and the shrunk counterexample on failure.
 * Every property is bounded in runs and in time, every request has a deadline. The run counts
 * are sized for the test suite (the whole file costs a few seconds of CPU);
 * TRACKER_FUZZ_RUNS=<factor> multiplies them for a deeper search.
 *
 * Behaviour this file documents (and asserts):
 * - Duplicate JSON keys: the last one wins (JSON.parse), on every body route, consistently.
 * - A UTF-8 byte order mark before a JSON body is ignored (secure-json-parse strips it).
 * - Invalid UTF-8 bytes in a body or a URL are decoded as U+FFFD, like any UTF-8 decoder.
 * - Ids are case-insensitive (`lockKey` lower-cases them); any other id answers 404, and a
 *   path parameter longer than Fastify's maxParamLength (100) may answer 414.
 * - Paths are not normalized: `..`, `%2e%2e`, `//` and encoded slashes never reach another
 *   route nor another lock.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import { join } from 'node:path';
import { after, afterEach, before, describe, test } from 'node:test';
import {
  type Client,
  type ClientReadableStream,
  credentials,
  Metadata,
  makeClientConstructor,
  makeGenericClientConstructor,
  type ServiceError,
  status,
} from '@grpc/grpc-js';
import { loadSync, type ServiceDefinition } from '@grpc/proto-loader';
import fc from 'fast-check';
import {
  MAX_HISTORY_LIMIT,
  MAX_NAME_LENGTH,
  MAX_PER_PAGE,
  MAX_REASON_LENGTH,
  MAX_TTL_SECONDS,
} from '../src/core/lock.js';
import {
  type LockServiceClient,
  lockServiceClient,
  PROTO_FILE,
  SERVICE,
  unary,
} from './support/grpc-client.js';
import { API } from './support/rest.js';
import { ROOT, type ServerProcess, startServerProcess, tempDir } from './support/server-process.js';
import { waitFor } from './support/wait-for.js';

// ---------------------------------------------------------------------------------------------
// Limits (README) and the rules the oracle applies.

const MAX_WAIT_SECONDS = 3600;
const BODY_LIMIT = 64 * 1024;
/** Fastify's default maxParamLength: a longer path parameter may answer 414. */
const MAX_PARAM_LENGTH = 100;
/** Unicode Cc: C0, DEL and C1 controls, refused in names and reasons. */
const CONTROL = /\p{Cc}/u;
/** Unicode Cf (bidi controls, zero-width characters, soft hyphen...) and U+2028/U+2029: refused in names. */
const INVISIBLE = /[\p{Cf}\u2028\u2029]/u;
const LONE_SURROGATE = /\p{Cs}/u;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const WHOLE_SECONDS = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/;
const POSITIVE = /^[1-9][0-9]{0,8}$/;
const EVENT_ID = /^[0-9]{1,15}$/;
const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.\d{1,9})?(?:Z|[+-](\d{2}):(\d{2}))$/;
/** A timestamp of RFC 3339's shape whose date and time exist (no February 30th, no 24:00). */
const validTimestamp = (value: string) => {
  const match = RFC3339.exec(value);
  if (!match) return false;
  const [year, month, day, hour, minute, second, offsetHours, offsetMinutes] = match
    .slice(1)
    .map((part) => Number(part ?? 0));
  // A Date rolls an impossible date over (February 30th becomes March 1st): one that exists
  // comes back unchanged.
  const date = new Date(0);
  date.setUTCFullYear(Number(year), Number(month) - 1, Number(day));
  return (
    date.getUTCFullYear() === year &&
    date.getUTCMonth() === Number(month) - 1 &&
    date.getUTCDate() === day &&
    Number(hour) <= 23 &&
    Number(minute) <= 59 &&
    Number(second) <= 59 &&
    Number(offsetHours) <= 23 &&
    Number(offsetMinutes) <= 59
  );
};
const EVENT_TYPES = ['acquired', 'released', 'expired', 'renewed', 'force-released', 'queued', 'dequeued'];

const codePoints = (value: string) => [...value].length;
/** Whitespace-separated tokens, for long lists of literals. */
const words = (list: string) => list.trim().split(/\s+/);

/** A name as the server keeps it: Unicode NFC. */
const nfc = (value: string) => value.normalize('NFC');

/**
 * The README's rule for `service` and `who`: 1 to 256 characters (as sent and in NFC), not
 * blank, no control, invisible or bidi formatting characters.
 */
const nameOk = (value: unknown): value is string =>
  typeof value === 'string' &&
  value.trim() !== '' &&
  codePoints(value) <= MAX_NAME_LENGTH &&
  codePoints(nfc(value)) <= MAX_NAME_LENGTH &&
  !CONTROL.test(value) &&
  !INVISIBLE.test(value);

const reasonOk = (value: unknown): value is string =>
  typeof value === 'string' && codePoints(value) <= MAX_REASON_LENGTH && !CONTROL.test(value);

const isInt = (value: unknown, min: number, max: number): value is number =>
  typeof value === 'number' && Number.isInteger(value) && value >= min && value <= max;

/** What a UTF-8 round trip makes of a string (lone surrogates become U+FFFD). */
const utf8 = (value: string) => Buffer.from(value, 'utf8').toString('utf8');

/** Percent-encodes every byte of the UTF-8 form except RFC 3986's unreserved characters. */
const pct = (value: string) =>
  [...Buffer.from(value, 'utf8')]
    .map((byte) => {
      const char = String.fromCharCode(byte);
      return /[A-Za-z0-9\-_.~]/.test(char) ? char : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
    })
    .join('');

/** A string of exactly `n` code points made of `unit` repeated. */
const ofCodePoints = (unit: string, n: number) => [...unit.repeat(n)].slice(0, n).join('');

const own = (object: object, key: string) => Object.hasOwn(object, key);
const isObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

/** What Fastify's JSON parser (secure-json-parse) does with a body: BOM stripped, then JSON.parse. */
function parseLikeServer(body: Buffer | string): { ok: true; value: unknown } | { ok: false } {
  let text = typeof body === 'string' ? body : body.toString('utf8');
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  try {
    const value: unknown = JSON.parse(text);
    return poisoned(value) ? { ok: false } : { ok: true, value };
  } catch {
    return { ok: false };
  }
}

/** `__proto__` or `constructor.prototype` anywhere: refused as invalid JSON. */
function poisoned(value: unknown): boolean {
  if (Array.isArray(value)) return value.some(poisoned);
  if (!isObject(value)) return false;
  if (own(value, '__proto__')) return true;
  if (isObject(value.constructor) && own(value, 'constructor') && own(value.constructor, 'prototype'))
    return true;
  return Object.values(value).some(poisoned);
}

/** The fields a body breaks (empty: valid), and whether a name holds a lone surrogate. */
interface Verdict {
  readonly bad: string[];
  readonly lone: boolean;
}

function judgeObject(
  value: unknown,
  fields: Record<string, { required?: boolean; ok: (v: unknown) => boolean }>,
): Verdict {
  if (!isObject(value)) return { bad: ['body'], lone: false };
  const bad: string[] = [];
  let lone = false;
  for (const key of Object.keys(value)) if (!own(fields, key)) bad.push(key);
  for (const [key, rule] of Object.entries(fields)) {
    if (!own(value, key)) {
      if (rule.required) bad.push(key);
      continue;
    }
    if (!rule.ok(value[key])) bad.push(key);
    else if (typeof value[key] === 'string' && LONE_SURROGATE.test(value[key])) lone = true;
  }
  return { bad, lone };
}

const judgeCreate = (value: unknown) =>
  judgeObject(value, {
    service: { required: true, ok: nameOk },
    who: { required: true, ok: nameOk },
    ttlSeconds: { ok: (v) => isInt(v, 1, MAX_TTL_SECONDS) },
    waitSeconds: { ok: (v) => isInt(v, 0, MAX_WAIT_SECONDS) },
  });
/** No body, an empty body and `null` all mean "no body" (renew and force-release). */
const judgeRenew = (value: unknown) =>
  value === undefined || value === null
    ? { bad: [], lone: false }
    : judgeObject(value, { ttlSeconds: { ok: (v) => isInt(v, 1, MAX_TTL_SECONDS) } });
const judgeForceRelease = (value: unknown) =>
  value === undefined || value === null
    ? { bad: [], lone: false }
    : judgeObject(value, { reason: { ok: reasonOk } });

// ---------------------------------------------------------------------------------------------
// Arbitraries.

/** A JSON token written verbatim (numbers JSON.stringify cannot write, broken literals...). */
class Raw {
  constructor(readonly text: string) {}
  [fc.toStringMethod]() {
    return `raw(${JSON.stringify(this.text)})`;
  }
}
type Json = null | boolean | number | string | Raw | Json[] | { [key: string]: Json };
type Entry = readonly [string, Json];
type HealthCheck = (
  request: object,
  metadata: Metadata,
  options: object,
  callback: (error: ServiceError | null, value?: { status: string }) => void,
) => void;

function jsonText(value: Json): string {
  if (value instanceof Raw) return value.text;
  if (Array.isArray(value)) return `[${value.map(jsonText).join(',')}]`;
  if (value !== null && typeof value === 'object') return objectText(Object.entries(value));
  // JSON.stringify writes lone surrogates as \udXXX escapes: a lone surrogate "via JSON".
  return JSON.stringify(value) ?? 'null';
}
const objectText = (entries: readonly Entry[]) =>
  `{${entries.map(([key, value]) => `${JSON.stringify(key)}:${jsonText(value)}`).join(',')}}`;

const SPECIAL = [
  '\u0000',
  '\u0001',
  '\t',
  '\n',
  '\r',
  '\u001b',
  '\u001f',
  '\u007f',
  '\u0080',
  '\u0085',
  '\u009f',
  '\u00a0',
  '\u00ad',
  '\u034f',
  '\u061c',
  '\u180e',
  '\u200b',
  '\u200d',
  '\u200e',
  '\u200f',
  '\u2028',
  '\u2029',
  '\u202a',
  '\u202e',
  '\u2066',
  '\u2069',
  '\u3000',
  '\ufeff',
  '\ufffc',
  '\ufffd',
  '\uffff',
  'e\u0301',
  '\u0301\u0302\u0303',
  'a\u0308\u0308\u0308\u0308',
  '😀',
  '👩‍👩‍👧‍👦',
  '🏳️‍🌈',
  '🇺🇳',
  '\u{10ffff}',
  '\u{e0001}',
  '𝕏',
  'ﷺ',
  'ß',
  'İ',
  'ǅ',
  'Ⅻ',
  '٣',
  '１',
  '"',
  '\\',
  '/',
  '%',
  '%00',
  '%2e',
  '..',
  '?',
  '#',
  '&',
  '=',
  '+',
  ';',
  ' ',
  '<script>',
  '{{x}}',
  '$(id)',
  "'",
  '`',
  '*',
] as const;
const LONE_SURROGATES = ['\ud800', '\udbff', '\udc00', '\udfff'] as const;

const char = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(...SPECIAL) },
  { weight: 3, arbitrary: fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }) },
  { weight: 2, arbitrary: fc.string({ unit: 'grapheme', minLength: 1, maxLength: 1 }) },
  { weight: 5, arbitrary: fc.string({ unit: 'grapheme-ascii', minLength: 1, maxLength: 1 }) },
  { weight: 1, arbitrary: fc.constantFrom(...LONE_SURROGATES) },
);
const shortText = fc.string({ unit: char, maxLength: 12 });
/** 255, 256, 257 code points and thereabouts, of one, two and four bytes, combining, blank. */
const boundaryText = fc
  .tuple(
    fc.constantFrom(1, 100, 101, 255, 256, 257, 1024, 1025),
    fc.constantFrom('a', '界', '😀', 'e\u0301', '\u200f', 'ǅ', ' ', '\u0301', '\u3000'),
  )
  .map(([n, unit]) => ofCodePoints(unit, n));
const hugeText = fc.integer({ min: 1025, max: 10_000 }).map((n) => 'h'.repeat(n));
/** Unique printable names, so that most valid creates get their own service. */
const uniqueName = fc.tuple(shortText, fc.uuid()).map(([text, uuid]) => `${text}${uuid}`);
const text = fc.oneof(
  { weight: 6, arbitrary: shortText },
  { weight: 3, arbitrary: uniqueName },
  { weight: 2, arbitrary: boundaryText },
  { weight: 1, arbitrary: hugeText },
);

const NUMBER_TOKENS = [
  ...words(
    'NaN Infinity -Infinity 1e400 -1e400 0x10 01 .5 +1 1. 1_000 --1 1e 0 -0 0.0 1.0 1e0 1E2 5e-324 9007199254740993 1e21 -1 2147483648 -2147483649 31536000 31536001 3601 1.5 0.99999999999999999 100e-2 "5" "1" true false [] {} null [1]',
  ),
];
const numberToken = fc.constantFrom(...NUMBER_TOKENS).map((token) => new Raw(token));

const junk: fc.Arbitrary<Json> = fc.oneof(
  fc.constant(null),
  fc.boolean(),
  fc.integer(),
  fc.double(),
  numberToken,
  fc.array(fc.string({ maxLength: 3 }), { maxLength: 3 }),
  fc.dictionary(fc.string({ maxLength: 3 }), fc.integer(), { maxKeys: 2 }),
);
const nameValue: fc.Arbitrary<Json> = fc.oneof(
  { weight: 4, arbitrary: text },
  { weight: 1, arbitrary: junk },
);
const ttlValue: fc.Arbitrary<Json> = fc.oneof(
  fc.integer({ min: 1, max: 3 }),
  fc.integer({ min: 60, max: MAX_TTL_SECONDS }),
  fc.integer(),
  fc.double(),
  junk,
  text,
);
/**
 * The only valid wait generated is 0: a wait on a held service would cost its length, and
 * shrinking retries many inputs on the same few services. Nothing here may parse as an
 * integer from 1 to 3600 (waiting is covered by explicit examples on services of their own).
 */
const waitValue: fc.Arbitrary<Json> = fc
  .oneof(fc.constant(0), fc.integer(), fc.double(), junk, text)
  .filter((value) => {
    const parsed: unknown = value instanceof Raw ? safeParse(value.text) : value;
    return !isInt(parsed, 1, MAX_WAIT_SECONDS);
  });
function safeParse(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
const extraKey = fc.oneof(
  fc.constantFrom(
    'ttl',
    'Service',
    'SERVICE',
    'service ',
    'wait_seconds',
    'ttl_seconds',
    '__proto__',
    'constructor',
    'prototype',
    'id',
    'fencingToken',
    '',
  ),
  fc.string({ maxLength: 8 }),
);

/** A key absent (weight 1), once (6) or twice with different values (1): duplicate keys. */
const field = (key: string, value: fc.Arbitrary<Json>): fc.Arbitrary<Entry[]> =>
  fc.oneof(
    { weight: 1, arbitrary: fc.constant<Entry[]>([]) },
    { weight: 6, arbitrary: value.map((v): Entry[] => [[key, v]]) },
    {
      weight: 1,
      arbitrary: fc.tuple(value, value).map(([a, b]): Entry[] => [
        [key, a],
        [key, b],
      ]),
    },
  );
const shuffled = (parts: Entry[][]) => {
  const entries = parts.flat();
  return fc.shuffledSubarray(entries, { minLength: entries.length, maxLength: entries.length });
};

const createBodyText = fc
  .tuple(
    field('service', nameValue),
    field('who', nameValue),
    field('ttlSeconds', ttlValue),
    field('waitSeconds', waitValue),
    fc.array(
      fc.tuple(extraKey, junk).map(([key, value]): Entry => [key, value]),
      { maxLength: 2 },
    ),
  )
  .chain((parts) => shuffled(parts))
  .map(objectText);

const renewBodyText = fc
  .tuple(
    field('ttlSeconds', ttlValue),
    fc.array(
      fc.tuple(extraKey, junk).map(([key, value]): Entry => [key, value]),
      { maxLength: 1 },
    ),
  )
  .chain((parts) => shuffled(parts))
  .map(objectText);

const reasonValue: fc.Arbitrary<Json> = fc.oneof(
  { weight: 4, arbitrary: text },
  { weight: 1, arbitrary: fc.constantFrom(1023, 1024, 1025).map((n) => ofCodePoints('😀', n)) },
  { weight: 1, arbitrary: junk },
);
const forceReleaseBodyText = fc
  .tuple(
    field('reason', reasonValue),
    fc.array(
      fc.tuple(extraKey, junk).map(([key, value]): Entry => [key, value]),
      { maxLength: 1 },
    ),
  )
  .chain((parts) => shuffled(parts))
  .map(objectText);

/** Optional bodies: none at all (weight 2), empty, or one of `bodies`. */
const optionalBody = (bodies: fc.Arbitrary<string>) =>
  fc.oneof(
    { weight: 2, arbitrary: fc.constant(undefined) },
    { weight: 1, arbitrary: fc.constant('') },
    { weight: 6, arbitrary: bodies },
  );

/** Bytes that are not UTF-8: a UTF-8-encoded surrogate, overlongs, truncations, 0xff. */
const INVALID_UTF8 = [
  [0xed, 0xa0, 0x80],
  [0xed, 0xbf, 0xbf],
  [0xc0, 0xaf],
  [0xe0, 0x80, 0xaf],
  [0xe2, 0x82],
  [0xf4, 0x90, 0x80, 0x80],
  [0xff],
  [0xfe, 0xfe, 0xff, 0xff],
  [0xc3],
  [0x80],
].map((bytes) => Buffer.from(bytes));
const invalidUtf8 = fc.oneof(
  fc.constantFrom(...INVALID_UTF8),
  fc.uint8Array({ minLength: 1, maxLength: 8 }).map((bytes) => Buffer.from(bytes)),
);

// ---------------------------------------------------------------------------------------------
// Transports.

interface HttpReply {
  readonly status: number;
  readonly headers: http.IncomingHttpHeaders;
  readonly text: string;
  /** The parsed body when it is JSON. */
  readonly json: Record<string, unknown> | undefined;
}

interface SendOptions {
  headers?: Record<string, string | string[]>;
  body?: string | Buffer;
  /** Send the body with Transfer-Encoding: chunked, in pieces. */
  chunked?: boolean;
  timeoutMs?: number;
}

const SEED_ENV = process.env.TRACKER_FUZZ_SEED;
const SEED =
  SEED_ENV === 'random'
    ? (Date.now() ^ (Math.random() * 0x7fffffff)) | 0
    : SEED_ENV
      ? Number(SEED_ENV)
      : 20_261_126;
/**
 * fast-check parameters: a fixed seed, a number of runs, and a time bound for the whole
 * property (runs and shrinking); a property cut short by the bound passes with fewer runs
 * unless it already failed.
 */
const RUNS_FACTOR = Number(process.env.TRACKER_FUZZ_RUNS ?? 1);
assert.ok(RUNS_FACTOR > 0, 'TRACKER_FUZZ_RUNS must be a positive number');
const params = (numRuns: number, examples: unknown[][] = []) =>
  ({
    numRuns: Math.max(1, Math.round(numRuns * RUNS_FACTOR)),
    seed: SEED,
    interruptAfterTimeLimit: 25_000,
    examples,
  }) as const;

describe('fuzzing: hostile input on every REST route and gRPC method (real server, SQLite file)', () => {
  const dir = tempDir('tracker-fuzz-');
  let server: ServerProcess;
  let grpc: LockServiceClient;
  let health: Client;
  let raw: Client;
  const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });

  /**
   * One HTTP/1.1 request over the agent; the path is sent as is (no normalization). A
   * keep-alive socket the server closed just as it was reused is retried once on a new
   * connection, as Node's documentation advises; a fresh connection is never retried.
   */
  const send = async (method: string, path: string, options: SendOptions = {}): Promise<HttpReply> => {
    try {
      return await sendOnce(method, path, options, agent);
    } catch (error) {
      if (!(error as { reusedSocket?: boolean }).reusedSocket) throw error;
      return sendOnce(method, path, options, false);
    }
  };
  const sendOnce = (
    method: string,
    path: string,
    options: SendOptions,
    via: http.Agent | false,
  ): Promise<HttpReply> =>
    new Promise((resolve, reject) => {
      const body = typeof options.body === 'string' ? Buffer.from(options.body, 'utf8') : options.body;
      const headers: http.OutgoingHttpHeaders = { ...options.headers };
      if (body !== undefined) {
        if (options.chunked) headers['transfer-encoding'] = 'chunked';
        else headers['content-length'] = body.length;
      }
      const ms = options.timeoutMs ?? 10_000;
      let request: http.ClientRequest;
      try {
        request = http.request({
          host: '127.0.0.1',
          port: server.httpPort,
          method,
          path,
          headers,
          agent: via,
        });
      } catch (error) {
        reject(error);
        return;
      }
      // The bound on a hang: a request the server never answers fails the test.
      const deadline = AbortSignal.timeout(ms);
      const onDeadline = () =>
        request.destroy(new Error(`no answer to ${method} ${path.slice(0, 200)} within ${ms} ms`));
      deadline.addEventListener('abort', onDeadline, { once: true });
      request.once('close', () => deadline.removeEventListener('abort', onDeadline));
      request.once('error', (error) => {
        const code = (error as { code?: string }).code;
        reject(Object.assign(error, { reusedSocket: request.reusedSocket && code === 'ECONNRESET' }));
      });
      request.once('response', (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.once('error', reject);
        response.once('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let json: Record<string, unknown> | undefined;
          if (/json/.test(String(response.headers['content-type'])) && text !== '') {
            try {
              json = JSON.parse(text) as Record<string, unknown>;
            } catch {
              json = undefined;
            }
          }
          resolve({ status: response.statusCode ?? 0, headers: response.headers, text, json });
        });
      });
      if (body !== undefined && options.chunked) {
        for (let at = 0; at < body.length; at += 16_384) request.write(body.subarray(at, at + 16_384));
        request.end();
      } else {
        request.end(body);
      }
    });

  const describeRequest = (method: string, path: string, body?: string | Buffer) => {
    const bytes = typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
    const shownPath = path.length > 300 ? `${path.slice(0, 300)}… (${path.length} chars)` : path;
    if (bytes === undefined) return `${method} ${shownPath}`;
    const shownBody =
      bytes.length > 300
        ? `${JSON.stringify(bytes.subarray(0, 300).toString())}… (${bytes.length} bytes)`
        : `${JSON.stringify(bytes.toString())} (hex ${bytes.toString('hex')})`;
    return `${method} ${shownPath} body ${shownBody}`;
  };
  /**
   * Node's HTTP parser refuses request heads over 16 KiB (431) before any route sees them;
   * true when that is what happened to this request (its body is checked elsewhere).
   */
  const beyondParser = (reply: { status: number }, head: string, what: string) => {
    if (head.length > 17_000) assert.equal(reply.status, 431, `${what}: ${reply.status}`);
    return head.length > 15_000 && reply.status === 431;
  };

  /** Never a 5xx; an error is JSON with a string `code`. */
  const expectSane = (reply: HttpReply, what: string, method = 'GET') => {
    assert.ok(reply.status >= 200 && reply.status < 500, `${what} answered ${reply.status}: ${reply.text}`);
    if (reply.status >= 400 && method !== 'HEAD') {
      assert.ok(reply.json, `${what}: the ${reply.status} is not JSON: ${reply.text.slice(0, 500)}`);
      assert.equal(typeof reply.json.code, 'string', `${what}: no code in ${reply.text.slice(0, 500)}`);
    }
  };
  const expectError = (reply: HttpReply, what: string, statusCode: number, codes: readonly string[]) => {
    expectSane(reply, what);
    assert.equal(
      reply.status,
      statusCode,
      `${what}: expected ${statusCode}, got ${reply.status}: ${reply.text}`,
    );
    assert.ok(
      codes.includes(String(reply.json?.code)),
      `${what}: expected code ${codes.join('|')}, got ${reply.text.slice(0, 500)}`,
    );
  };
  /** 400 INVALID_ARGUMENT naming one of the bad fields (or none, for broken JSON). */
  const expectInvalid = (reply: HttpReply, what: string, bad: readonly string[]) => {
    expectError(reply, what, 400, ['INVALID_ARGUMENT']);
    const field = reply.json?.field;
    if (field !== undefined && bad.length > 0) {
      assert.ok(
        bad.includes(String(field)),
        `${what}: field ${String(field)} is not one of ${bad.join(', ')}`,
      );
    }
  };

  interface LockJson {
    id: string;
    service: string;
    who: string;
    createdAt: string;
    ttlSeconds: number | null;
    expiresAt: string | null;
    fencingToken: number;
    waiters: number;
  }
  const expectLockShape = (lock: unknown, what: string): LockJson => {
    assert.ok(isObject(lock), `${what}: not a lock: ${JSON.stringify(lock)}`);
    const l = lock as unknown as LockJson;
    assert.match(l.id, UUID, what);
    assert.equal(typeof l.service, 'string', what);
    assert.equal(typeof l.who, 'string', what);
    assert.match(l.createdAt, WHOLE_SECONDS, what);
    assert.ok(l.ttlSeconds === null || isInt(l.ttlSeconds, 1, MAX_TTL_SECONDS), what);
    assert.ok(
      (l.ttlSeconds === null) === (l.expiresAt === null),
      `${what}: ttlSeconds and expiresAt disagree`,
    );
    if (l.expiresAt !== null) assert.match(l.expiresAt, WHOLE_SECONDS, what);
    assert.ok(Number.isSafeInteger(l.fencingToken) && l.fencingToken >= 1, `${what}: fencingToken`);
    assert.ok(Number.isSafeInteger(l.waiters) && l.waiters >= 0, `${what}: waiters`);
    return l;
  };

  /** A fresh lock on a service of its own, without TTL. */
  const freshLock = async (label = 'fuzz'): Promise<LockJson> => {
    const reply = await send('POST', `${API}/lock`, {
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ service: `${label}-${randomUUID()}`, who: 'fuzzer' }),
    });
    assert.equal(reply.status, 201, reply.text);
    return expectLockShape(reply.json, 'fresh lock');
  };
  const isHeld = async (id: string) => {
    const reply = await send('GET', `${API}/lock/${id}`);
    expectSane(reply, `GET lock ${id}`);
    return reply.status === 200;
  };

  /**
   * Makes an event that a watch of `service` (undefined: of every service) must receive: a
   * lock taken and released on it or, when it is held, its holder renewed.
   */
  const poke = async (service: string | undefined) => {
    const name = service ?? `poke-${randomUUID()}`;
    const taken = await send('POST', `${API}/lock`, {
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ service: name, who: 'watch-poke' }),
    });
    if (taken.status === 201) {
      const released = await send('DELETE', `${API}/lock/${String(taken.json?.id)}`);
      assert.equal(released.status, 200, `poking ${JSON.stringify(name)}: ${released.text}`);
      return;
    }
    assert.equal(taken.status, 409, `poking ${JSON.stringify(name)}: ${taken.text}`);
    const holder = expectLockShape(taken.json?.existingLock, 'the holder poked');
    const renewed = await send('POST', `${API}/lock/${holder.id}/renew`, { headers: { 'x-tracker': '1' } });
    assert.equal(renewed.status, 200, `poking ${JSON.stringify(name)}: ${renewed.text}`);
  };
  /**
   * Waits until `heard` returns what a stream said (its first message, its error or its end).
   * A watch may rightly say nothing (resumed after the last event it may see), so the wait
   * does not end on a time but on evidence: while the stream is silent, `nudge` (if given)
   * makes an event it must receive, once the stream had a few polls' time to answer first.
   */
  const untilHeard = <T>(heard: () => T | undefined, what: string, nudge: (() => Promise<void>) | null) => {
    let polls = 0;
    return waitFor(
      async () => {
        const said = heard();
        if (said !== undefined || nudge === null || ++polls % 5 !== 0) return said;
        await nudge();
        return heard();
      },
      { what, timeoutMs: 8000 },
    );
  };

  /**
   * The first thing a gRPC stream says: a message, its error (its deadline's included), or
   * its end; the call is then cancelled. `nudge`: see untilHeard.
   */
  const firstWord = async <T>(
    call: NodeJS.EventEmitter & { cancel(): void },
    what: string,
    nudge: (() => Promise<void>) | null,
  ): Promise<{ message?: T; error?: ServiceError; ended?: true }> => {
    let said: { message?: T; error?: ServiceError; ended?: true } | undefined;
    call.once('data', (message: T) => {
      said ??= { message };
    });
    call.once('error', (error: ServiceError) => {
      said ??= { error };
    });
    call.once('end', () => {
      said ??= { ended: true };
    });
    try {
      return await untilHeard(() => said, what, nudge);
    } finally {
      call.on('error', () => {});
      call.cancel();
    }
  };

  /**
   * One call with raw bytes: the answer or the error of a unary call, the first word of a
   * stream. A WatchLocks request that the server reads as valid may resume after the last
   * event it may see and say nothing: its service is poked (decoded here as the server does).
   */
  const rawCall = (
    method: RawMethod,
    payload: Buffer,
  ): Promise<{ response?: Buffer; error?: ServiceError }> => {
    const options = { deadline: Date.now() + 5000 };
    const fn = (raw as unknown as Record<string, (...args: unknown[]) => unknown>)[method.path];
    assert.ok(fn);
    if (method.kind === 'unary') {
      return new Promise((resolve) => {
        fn.call(raw, payload, new Metadata(), options, (error: ServiceError | null, response?: Buffer) =>
          resolve(error ? { error } : { response }),
        );
      });
    }
    const call = (
      method.kind === 'server-stream'
        ? fn.call(raw, payload, new Metadata(), options)
        : fn.call(raw, new Metadata(), options)
    ) as NodeJS.EventEmitter & { cancel(): void; write?(b: Buffer): void; end?(): void };
    if (method.kind === 'bidi') {
      call.write?.(payload);
      call.end?.();
    }
    let nudge: (() => Promise<void>) | null = null;
    if (method.path === `/${SERVICE}/WatchLocks`) {
      try {
        const request = watchLocksRequest(payload);
        const valid =
          (request.service === '' || nameOk(request.service)) &&
          (request.lastEventId === '' || EVENT_ID.test(request.lastEventId));
        if (valid) nudge = () => poke(request.service === '' ? undefined : request.service);
      } catch {
        // Bytes that do not decode: the server answers with an error at once.
      }
    }
    return firstWord<Buffer>(call, `${method.path} to answer`, nudge).then(({ message, error }) =>
      error ? { error } : { response: message },
    );
  };

  type RpcResult<T> = { ok: true; value: T } | { ok: false; error: ServiceError };
  const rpc = async <T = Record<string, unknown>>(
    method: string,
    request: object,
    timeoutMs = 10_000,
  ): Promise<RpcResult<T>> => {
    try {
      return { ok: true, value: await unary<T>(grpc, method, request, timeoutMs) };
    } catch (error) {
      return { ok: false, error: error as ServiceError };
    }
  };
  const trackerCode = (error: ServiceError) => String(error.metadata?.get('tracker-code')[0] ?? '');
  const trackerField = (error: ServiceError) => {
    const value = error.metadata?.get('tracker-field')[0];
    return value === undefined ? undefined : String(value);
  };
  /** Well-formed protobuf never answers INTERNAL or UNKNOWN; our errors carry tracker-code. */
  const expectGrpcSane = (result: RpcResult<unknown>, what: string) => {
    if (result.ok) return;
    const { code, details } = result.error;
    assert.ok(
      code !== status.INTERNAL && code !== status.UNKNOWN,
      `${what}: ${status[code]} ${details} ${JSON.stringify(result.error.metadata?.getMap())}`,
    );
  };
  const expectGrpcError = (
    result: RpcResult<unknown>,
    what: string,
    code: status,
    codes: readonly string[],
  ) => {
    expectGrpcSane(result, what);
    assert.ok(
      !result.ok,
      `${what}: expected ${status[code]}, got OK ${JSON.stringify(result.ok && result.value)}`,
    );
    assert.equal(status[result.error.code], status[code], `${what}: ${result.error.details}`);
    assert.ok(
      codes.includes(trackerCode(result.error)),
      `${what}: tracker-code ${trackerCode(result.error)}`,
    );
  };
  const expectGrpcInvalid = (result: RpcResult<unknown>, what: string, bad: readonly string[]) => {
    expectGrpcError(result, what, status.INVALID_ARGUMENT, ['INVALID_ARGUMENT']);
    if (!result.ok) {
      const field = trackerField(result.error);
      assert.ok(
        field === undefined || bad.includes(field),
        `${what}: field ${field} not in ${bad.join(', ')}`,
      );
    }
  };

  /** Error lines (level >= 50) the server logged: a bug was hit (with its stack). */
  const serverErrors = () =>
    server.lines.filter((line) => {
      try {
        return (JSON.parse(line) as { level?: number }).level !== undefined && JSON.parse(line).level >= 50;
      } catch {
        return false;
      }
    });

  before(async () => {
    server = await startServerProcess({
      args: [
        '--http-port',
        '0',
        '--grpc-port',
        '0',
        '--database-url',
        `sqlite:${join(dir.path, 'tracker.db')}`,
      ],
    });
    grpc = lockServiceClient(server.grpcAddress);
    const healthDefinition = loadSync(join(ROOT, 'proto/grpc/health/v1/health.proto'), {
      keepCase: false,
      defaults: true,
      enums: String,
    });
    const Health = makeClientConstructor(
      healthDefinition['grpc.health.v1.Health'] as ServiceDefinition,
      'Health',
    );
    health = new Health(server.grpcAddress, credentials.createInsecure());
    raw = new RawClient(server.grpcAddress, credentials.createInsecure());
  });

  after(async () => {
    grpc?.close();
    health?.close();
    raw?.close();
    agent.destroy();
    await server?.stop();
    dir.remove();
  });

  // After every test: the process is running and /healthz answers, and no bug was logged.
  afterEach(async () => {
    const alive = await send('GET', '/healthz', { timeoutMs: 5000 }).catch((error: Error) => error);
    const { exitCode, signalCode, pid } = server.child;
    assert.ok(
      exitCode === null && signalCode === null && !(alive instanceof Error),
      `the server process (pid ${pid}) ${exitCode ?? signalCode ?? 'does not answer'}: ${String(alive)}; ` +
        `stdout tail:\n${server.lines.slice(-20).join('\n')}`,
    );
    assert.equal(alive.status, 200, alive.text);
    assert.deepEqual(serverErrors(), [], 'the server logged errors (bugs)');
  });

  // -------------------------------------------------------------------------------------------
  describe('REST', () => {
    const JSON_HEADERS = { 'content-type': 'application/json' };

    test('POST /lock: any JSON object is 201/409 exactly when valid, else 400 naming a bad field', async () => {
      const WAIT_SERVICE = `wait-${randomUUID()}`;
      await fc.assert(
        fc.asyncProperty(createBodyText, async (body) => {
          const what = describeRequest('POST', `${API}/lock`, body);
          const reply = await send('POST', `${API}/lock`, { headers: JSON_HEADERS, body });
          const parsed = parseLikeServer(body);
          if (!parsed.ok) return expectInvalid(reply, what, []);
          const { bad, lone } = judgeCreate(parsed.value);
          if (bad.length > 0) return expectInvalid(reply, what, bad);
          const sent = parsed.value as { service: string; who: string; ttlSeconds?: number };
          // A lone surrogate cannot be stored as text: refusing it is fine, and so is keeping it
          // exactly; silently storing something else is not.
          if (lone && reply.status === 400) return expectInvalid(reply, what, ['service', 'who']);
          expectSane(reply, what, 'POST');
          if (reply.status === 409) {
            assert.ok(['LOCK_HELD', 'WAIT_TIMEOUT'].includes(String(reply.json?.code)), what);
            assert.equal(reply.json?.id, undefined, `${what}: a 409 has no top-level id`);
            const existing = expectLockShape(reply.json?.existingLock, what);
            assert.equal(existing.service, nfc(sent.service), `${what}: existingLock is of another service`);
            return;
          }
          assert.equal(reply.status, 201, `${what}: ${reply.status} ${reply.text}`);
          const lock = expectLockShape(reply.json, what);
          assert.equal(lock.service, nfc(sent.service), `${what}: service came back different`);
          assert.equal(lock.who, nfc(sent.who), `${what}: who came back different`);
          assert.equal(lock.ttlSeconds, sent.ttlSeconds ?? null, what);
        }),
        params(120, [
          [
            objectText([
              ['service', ofCodePoints('😀', 256)],
              ['who', ofCodePoints('e\u0301', 256)],
            ]),
          ],
          [
            objectText([
              ['service', ofCodePoints('😀', 257)],
              ['who', 'w'],
            ]),
          ],
          // Waiting: a free service of its own, then the same service held (WAIT_TIMEOUT after 1 s).
          ...[0, 1].map((wait) => [
            objectText([
              ['service', WAIT_SERVICE],
              ['who', `w${wait}`],
              ['waitSeconds', wait],
            ]),
          ]),
        ]),
      );
    });

    test('many holders: POST /lock with limit, mode, label and priority, POST /locks, group and resource routes; never a 5xx, a 400 names a field', async () => {
      // A few services, labels and resources of this test's own, so that limits, modes and
      // groups meet each other; no waiting (a wait would cost its length).
      const tag = randomUUID().slice(0, 8);
      const services = [0, 1, 2].map((i) => `mh-${tag}-${i}`);
      const labels = [`mh-${tag}-pool`, `mh-${tag}-none`];
      const resources = [0, 1].map((i) => `mh-${tag}-r${i}`);
      for (const name of resources) {
        const reply = await send('PUT', `${API}/resources/${name}`, {
          headers: JSON_HEADERS,
          body: JSON.stringify({ labels: [labels[0]], capacity: 2 }),
        });
        assert.equal(reply.status, 201, reply.text);
      }
      const target = fc.oneof(
        fc.constantFrom(...services, ...resources).map((service): Entry[] => [['service', service]]),
        fc.constantFrom(...labels).map((label): Entry[] => [['label', label]]),
        fc.tuple(junk, junk).map(([service, label]): Entry[] => [
          ['service', service],
          ['label', label],
        ]),
        fc.constant<Entry[]>([]),
      );
      const claimFields = fc.tuple(
        target,
        field('mode', fc.oneof(fc.constantFrom('exclusive', 'shared', 'SHARED', ''), junk)),
        field('limit', fc.oneof(fc.integer({ min: 0, max: 1001 }), junk)),
        field('quantity', fc.oneof(fc.integer({ min: 0, max: 33 }), junk)),
      );
      // Claims as raw JSON text: their values may be tokens JSON.parse refuses (NaN, 1e400).
      const claim = claimFields.map((parts) => objectText(parts.flat()));
      const priority = fc.oneof(fc.integer({ min: -1001, max: 1001 }), junk);
      const single = fc
        .tuple(
          claimFields,
          field('who', nameValue),
          field('priority', priority),
          field('ttlSeconds', ttlValue),
        )
        .map(([claimParts, ...rest]) => objectText([...claimParts.flat(), ...rest.flat()]));
      const group = fc
        .tuple(
          field('who', nameValue),
          field('priority', priority),
          field(
            'locks',
            fc.oneof(
              fc.array(claim, { maxLength: 34 }).map((list): Json => new Raw(`[${list.join(',')}]`)),
              junk,
            ),
          ),
        )
        .map((parts) => objectText(parts.flat()));
      const resource = fc
        .tuple(
          field('labels', fc.oneof(fc.array(nameValue, { maxLength: 4 }), junk)),
          field(
            'properties',
            fc.oneof(fc.dictionary(fc.string({ maxLength: 4 }), nameValue, { maxKeys: 3 }), junk),
          ),
          field('capacity', fc.oneof(fc.integer({ min: 0, max: 1001 }), junk)),
          field('description', fc.oneof(text, junk)),
        )
        .map((parts) => objectText(parts.flat()));
      // A path or query part; lone surrogates (which encodeURIComponent refuses) as '?'.
      const encode = (value: string) => encodeURIComponent(value.replace(/[\uD800-\uDFFF]/g, '?'));
      const idText = fc.oneof(fc.uuid(), text.map(String), fc.constant(''));
      const call = fc.oneof(
        single.map((body) => ({ method: 'POST', path: `${API}/lock`, body })),
        group.map((body) => ({ method: 'POST', path: `${API}/locks`, body })),
        resource.map((body) => ({ method: 'PUT', path: `${API}/resources/mh-${tag}-put`, body })),
        fc
          .constantFrom('GET', 'DELETE')
          .chain((method) =>
            fc
              .tuple(fc.constant(method), idText)
              .map(([m, id]) => ({ method: m, path: `${API}/locks/${encode(id)}` })),
          ),
        idText.map((id) => ({
          method: 'POST',
          path: `${API}/locks/${encode(id)}/renew`,
          body: '{}',
        })),
        fc.oneof(text, junk).map((label) => ({
          method: 'GET',
          path: `${API}/resources?label=${encode(typeof label === 'string' ? label : label instanceof Raw ? label.text : JSON.stringify(label))}`,
        })),
      );
      await fc.assert(
        fc.asyncProperty(
          call,
          async ({ method, path, body }: { method: string; path: string; body?: string }) => {
            const what = describeRequest(method, path, body);
            const reply = await send(method, path, body === undefined ? {} : { headers: JSON_HEADERS, body });
            expectSane(reply, what, method);
            if (reply.status === 400) {
              assert.equal(reply.json?.code, 'INVALID_ARGUMENT', what);
              if (body !== undefined && parseLikeServer(body).ok) {
                assert.equal(
                  typeof reply.json?.field,
                  'string',
                  `${what}: a 400 names no field: ${reply.text}`,
                );
              }
            }
            if (reply.status === 201 && path === `${API}/lock`) expectLockShape(reply.json, what);
          },
        ),
        params(150),
      );
    });

    test('POST /lock with raw text: broken JSON, duplicate keys (the last wins), BOM, deep nesting, invalid UTF-8', async () => {
      const dupKeys = fc
        .tuple(nameValue, nameValue, nameValue, fc.boolean())
        .map(([a, b, c, ttlTwice]) =>
          Buffer.from(
            `{"service":${jsonText(a)},"who":${jsonText(c)},"service":${jsonText(b)}${ttlTwice ? ',"ttlSeconds":"x","ttlSeconds":60' : ''}}`,
          ),
        );
      const broken = fc.constantFrom(
        '{',
        '}',
        '{"service":',
        '{"service":"a","who":"b",}',
        "{'service':'a','who':'b'}",
        '{"service":"a" "who":"b"}',
        '{"service":"a","who":"b"}{}',
        '{"service":"a","who":"b"} x',
        '\u0000',
        '[',
        '"x"',
        '1',
        'true',
        'null',
        '[]',
        '{"service":"a\\x41","who":"b"}',
        '{"service":"a\\u00","who":"b"}',
        '{"service":"\\ud800\\udc00","who":"b"}',
        '{"service":"a","who":"b","__proto__":{"x":1}}',
        '{"service":"a","who":"b","\\u005f_proto__":{"x":1}}',
        '{"service":"a","who":"b","constructor":{"prototype":{"x":1}}}',
        `{"service":"deep","who":"b","x":${'['.repeat(5000)}${']'.repeat(5000)}}`,
        `{"service":${'{"a":'.repeat(3000)}1${'}'.repeat(3000)},"who":"b"}`,
        '['.repeat(60_000),
      );
      const unique = () => randomUUID().slice(0, 8);
      const withBom = fc.constant(null).map(() => `\ufeff{"service":"bom-${unique()}","who":"b"}`);
      const withWhitespace = fc
        .constantFrom(' ', '\t', '\n', '\r\n', '\u00a0')
        .map((ws) => `${ws}{"service":"ws-${unique()}","who":"b"}${ws}`);
      const rawBytes = fc
        .tuple(invalidUtf8, fc.constantFrom('service', 'who'))
        .map(([bytes, key]) =>
          Buffer.concat([
            Buffer.from(`{"${key === 'service' ? 'who' : 'service'}":"bytes-${unique()}","${key}":"x`),
            bytes,
            Buffer.from('y"}'),
          ]),
        );
      const truncated = createBodyText.chain((body) =>
        fc.nat({ max: Math.max(0, body.length - 1) }).map((n) => body.slice(0, n)),
      );
      const body = fc.oneof(dupKeys, broken, withBom, withWhitespace, rawBytes, truncated) as fc.Arbitrary<
        string | Buffer
      >;
      await fc.assert(
        fc.asyncProperty(body, async (body) => {
          const what = describeRequest('POST', `${API}/lock`, body);
          const reply = await send('POST', `${API}/lock`, { headers: JSON_HEADERS, body });
          const parsed = parseLikeServer(body);
          if (!parsed.ok) return expectInvalid(reply, what, []);
          const { bad, lone } = judgeCreate(parsed.value);
          if (bad.length > 0) return expectInvalid(reply, what, bad);
          if (lone && reply.status === 400) return expectInvalid(reply, what, ['service', 'who']);
          expectSane(reply, what, 'POST');
          assert.ok([201, 409].includes(reply.status), `${what}: ${reply.status} ${reply.text}`);
          const sent = parsed.value as { service: string; who: string };
          if (reply.status === 201) {
            assert.equal(
              reply.json?.service,
              nfc(sent.service),
              `${what}: service came back different (the last duplicate wins)`,
            );
            assert.equal(reply.json?.who, nfc(sent.who), what);
          }
        }),
        params(100, [[Buffer.from(`{"service":"a-${unique()}","service":"b-${unique()}","who":"c"}`)]]),
      );
    });

    /** Every route that takes a body, with a body that is otherwise fine. */
    const bodyRoutes = [
      { name: 'create', method: 'POST', path: () => `${API}/lock` },
      { name: 'renew', method: 'POST', path: (id: string) => `${API}/lock/${id}/renew` },
      { name: 'force-release', method: 'POST', path: (id: string) => `${API}/lock/${id}/force-release` },
      { name: 'unlock', method: 'POST', path: (id: string) => `${API}/unlock/${id}` },
    ] as const;

    test('every body route: a content type other than application/json is 415, JSON with parameters and any case is fine', async () => {
      const good = [
        'application/json',
        'Application/JSON',
        'application/json; charset=utf-8',
        'APPLICATION/JSON;charset=UTF-8',
      ];
      const badTypes = [
        undefined,
        'text/plain',
        'text/json',
        'application/x-www-form-urlencoded',
        'multipart/form-data; boundary=x',
        'application/jsonx',
        'application/json-patch+json',
        'application/problem+json',
        'application/xml',
        'application/octet-stream',
        '*/*',
      ];
      const contentType = fc.oneof(
        {
          weight: 2,
          arbitrary: fc.constantFrom(...good).map((type) => ({ type, verdict: 'json' as const })),
        },
        {
          weight: 3,
          arbitrary: fc.constantFrom(...badTypes).map((type) => ({ type, verdict: '415' as const })),
        },
        {
          weight: 2,
          arbitrary: fc
            .string({ unit: fc.constantFrom(...'abjsonJSON/;=+-* ,"\t'.split('')), maxLength: 30 })
            .map((type) => ({ type, verdict: 'unknown' as const })),
        },
      );
      await fc.assert(
        fc.asyncProperty(fc.constantFrom(...bodyRoutes), contentType, async (route, { type, verdict }) => {
          const lock = route.name === 'create' ? undefined : await freshLock('ctype');
          const body =
            route.name === 'create'
              ? JSON.stringify({ service: `ctype-${randomUUID()}`, who: 'w' })
              : route.name === 'renew'
                ? JSON.stringify({ ttlSeconds: 600 })
                : route.name === 'force-release'
                  ? JSON.stringify({ reason: 'fuzz' })
                  : '{}';
          const path = route.path(lock?.id ?? '');
          const what = `${describeRequest(route.method, path, body)} content-type ${JSON.stringify(type)}`;
          const reply = await send(route.method, path, {
            headers: type === undefined ? {} : { 'content-type': type },
            body,
          });
          expectSane(reply, what, route.method);
          if (verdict === 'json') {
            assert.equal(reply.status, route.name === 'create' ? 201 : 200, `${what}: ${reply.text}`);
          } else if (verdict === '415') {
            expectError(reply, what, 415, ['UNSUPPORTED_MEDIA_TYPE']);
          } else {
            assert.ok([200, 201, 400, 415].includes(reply.status), `${what}: ${reply.status} ${reply.text}`);
          }
          if (lock && reply.status >= 400) {
            assert.ok(await isHeld(lock.id), `${what}: a refused request released the lock`);
          }
        }),
        params(60),
      );
    });

    test('every body route: bodies over 64 KiB are 413 (by length or chunked), up to 64 KiB are judged by content', async () => {
      const size = fc.oneof(
        fc.constantFrom(BODY_LIMIT - 1, BODY_LIMIT, BODY_LIMIT + 1, 100_000),
        fc.integer({ min: BODY_LIMIT - 200, max: 110_000 }),
      );
      const filler = fc.constantFrom('a', '界', ' ', '"', '\\');
      await fc.assert(
        fc.asyncProperty(
          fc.constantFrom(...bodyRoutes),
          size,
          filler,
          fc.boolean(),
          async (route, n, fill, chunked) => {
            const lock = route.name === 'create' ? undefined : await freshLock('big');
            // A JSON object whose only string is as long as it takes to reach n bytes.
            const key =
              route.name === 'create' ? 'service' : route.name === 'renew' ? 'ttlSeconds' : 'reason';
            const head = route.name === 'create' ? '{"who":"w","service":"' : `{"${key}":"`;
            const unit = fill === '"' ? '\\"' : fill === '\\' ? '\\\\' : fill;
            const unitBytes = Buffer.byteLength(unit);
            const room = Math.max(0, n - Buffer.byteLength(head) - 2);
            let inner = unit.repeat(Math.floor(room / unitBytes));
            inner += 'x'.repeat(room - Buffer.byteLength(inner));
            const body = Buffer.from(`${head}${inner}"}`);
            const path = route.path(lock?.id ?? '');
            const what = `${route.method} ${path} with ${body.length} bytes${chunked ? ' (chunked)' : ''} of ${JSON.stringify(fill)}`;
            const reply = await send(route.method, path, { headers: JSON_HEADERS, body, chunked });
            if (body.length > BODY_LIMIT) {
              expectError(reply, what, 413, ['PAYLOAD_TOO_LARGE']);
            } else if (route.name === 'unlock') {
              // The unlock route takes no fields, and ignores what it is sent.
              expectSane(reply, what, 'POST');
              assert.equal(reply.status, 200, `${what}: ${reply.text}`);
            } else {
              // Every such string is too long (service over 256, reason over 1024) or of the wrong type.
              expectInvalid(reply, what, [key]);
            }
            if (lock && reply.status !== 200) {
              assert.ok(await isHeld(lock.id), `${what}: a refused request released the lock`);
            }
          },
        ),
        params(20),
      );
    });

    /** How a lock's id is written in the path, and whether that still names the lock. */
    const ID_VARIANTS = {
      exact: { names: true, path: (id: string) => id },
      upper: { names: true, path: (id: string) => id.toUpperCase() },
      mixed: {
        names: true,
        path: (id: string) => [...id].map((c, i) => (i % 2 ? c.toUpperCase() : c)).join(''),
      },
      percent: {
        names: true,
        path: (id: string) => [...id].map((c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`).join(''),
      },
      braces: { names: false, path: (id: string) => `{${id}}` },
      'encoded braces': { names: false, path: (id: string) => `%7B${id}%7D` },
      urn: { names: false, path: (id: string) => `urn:uuid:${id}` },
      short: { names: false, path: (id: string) => id.slice(0, 35) },
      long: { names: false, path: (id: string) => `${id}0` },
      'no dashes': { names: false, path: (id: string) => id.replaceAll('-', '') },
      nul: { names: false, path: (id: string) => `${id}%00` },
      space: { names: false, path: (id: string) => `%20${id}` },
      tab: { names: false, path: (id: string) => `${id}%09` },
      semicolon: { names: false, path: (id: string) => `${id};x=1` },
      'encoded slash': { names: false, path: (id: string) => `${id}%2Fx` },
      'dot segments': { names: false, path: (id: string) => `${id}%2F..%2F${id}` },
      'fullwidth digit': {
        names: false,
        path: (id: string) => pct(id.replace(/[0-9]/, (d) => String.fromCharCode(0xff10 + Number(d)))),
      },
      'lookalike dash': { names: false, path: (id: string) => pct(id.replace('-', '\u2010')) },
    } as const;
    /** Paths that must not reach the route at all: no normalization of dots or slashes. */
    const UNROUTED = {
      'trailing slash': (path: string) => `${path}/`,
      'double slash': (path: string) => path.replace(`${API}/`, `${API}//`),
      'dot segment': (path: string) => path.replace(`${API}/`, `${API}/x/../`),
      'encoded dot segment': (path: string) => path.replace(`${API}/`, `${API}/x/%2e%2e/`),
      'prefix case': (path: string) => path.replace('/api/', '/API/'),
    } as const;
    const ID_OPS = ['get', 'get-unlock', 'post-unlock', 'delete', 'renew', 'force-release'] as const;
    type IdOp = (typeof ID_OPS)[number];
    const opRequest = (op: IdOp, id: string): { method: string; path: string } => {
      switch (op) {
        case 'get':
          return { method: 'GET', path: `${API}/lock/${id}` };
        case 'get-unlock':
          return { method: 'GET', path: `${API}/unlock/${id}` };
        case 'post-unlock':
          return { method: 'POST', path: `${API}/unlock/${id}` };
        case 'delete':
          return { method: 'DELETE', path: `${API}/lock/${id}` };
        case 'renew':
          return { method: 'POST', path: `${API}/lock/${id}/renew` };
        case 'force-release':
          return { method: 'POST', path: `${API}/lock/${id}/force-release` };
      }
    };

    test('id routes (GET/DELETE lock, GET/POST unlock, renew, force-release): only the id itself, in any case, names a lock', async () => {
      const idWay = fc.oneof(
        {
          weight: 5,
          arbitrary: fc.constantFrom(...Object.keys(ID_VARIANTS)).map((variant) => ({ variant, text: '' })),
        },
        { weight: 2, arbitrary: text.map((t) => ({ variant: 'random', text: t })) },
        {
          weight: 1,
          arbitrary: fc
            .constantFrom(
              '00000000-0000-0000-0000-000000000000',
              'ffffffff-ffff-ffff-ffff-ffffffffffff',
              '..',
              '.',
              '%2e%2e',
              '%00',
              '%2F',
              '%5C..%5C',
              '',
            )
            .map((t) => ({ variant: 'literal', text: t })),
        },
      );
      const unrouted = fc.option(fc.constantFrom(...Object.keys(UNROUTED)), { freq: 4 });
      const body = fc.oneof(optionalBody(renewBodyText), optionalBody(forceReleaseBodyText));
      await fc.assert(
        fc.asyncProperty(fc.constantFrom(...ID_OPS), idWay, unrouted, body, async (op, way, trick, body) => {
          const lock = await freshLock('ids');
          const variant = ID_VARIANTS[way.variant as keyof typeof ID_VARIANTS];
          const idPath = variant
            ? variant.path(lock.id)
            : way.variant === 'literal'
              ? way.text
              : pct(way.text);
          const names = variant?.names ?? false;
          const request = opRequest(op, idPath);
          const path = trick ? UNROUTED[trick as keyof typeof UNROUTED](request.path) : request.path;
          const withBody = request.method === 'POST' && body !== undefined;
          const what = describeRequest(request.method, path, withBody ? body : undefined);
          // A POST without a body says it is no HTML form (X-Tracker), or it is refused as
          // cross-site (test/cross-site.test.ts); here the routing is what is fuzzed.
          const reply = await send(
            request.method,
            path,
            withBody
              ? { headers: JSON_HEADERS, body }
              : { headers: request.method === 'POST' ? { 'x-tracker': '1' } : {} },
          );
          if (beyondParser(reply, path, what)) return;
          expectSane(reply, what, request.method);
          const envelope = op === 'get-unlock' || op === 'post-unlock' || op === 'delete';
          let released = false;
          if (Buffer.byteLength(idPath) > MAX_PARAM_LENGTH && reply.status === 414) {
            // Fastify's maxParamLength: allowed for a parameter that cannot be an id.
            assert.ok(!names, what);
          } else if (trick) {
            // No route: 404, unless the body could not even be parsed (the 404 handler parses it too).
            if (withBody && body !== '' && !parseLikeServer(body).ok && reply.status === 400) {
              expectInvalid(reply, what, []);
            } else {
              expectError(reply, what, 404, ['NOT_FOUND']);
            }
          } else {
            const parsed =
              withBody && body !== '' ? parseLikeServer(body) : { ok: true as const, value: undefined };
            const verdict =
              op === 'renew'
                ? parsed.ok
                  ? judgeRenew(parsed.value)
                  : { bad: ['body'], lone: false }
                : op === 'force-release'
                  ? parsed.ok
                    ? judgeForceRelease(parsed.value)
                    : { bad: ['body'], lone: false }
                  : { bad: parsed.ok ? [] : ['body'], lone: false };
            if (verdict.bad.length > 0) {
              expectInvalid(reply, what, parsed.ok ? verdict.bad : []);
            } else if (verdict.lone && reply.status === 400) {
              expectInvalid(reply, what, ['reason']);
            } else if (names) {
              assert.equal(reply.status, 200, `${what}: ${reply.text}`);
              if (op === 'get') assert.deepEqual(reply.json, lock, `${what}: not the same lock`);
              if (op === 'renew') {
                assert.equal(reply.json?.id, lock.id, what);
                const ttl =
                  (parsed.ok && isObject(parsed.value) ? parsed.value.ttlSeconds : undefined) ?? null;
                assert.equal(reply.json?.ttlSeconds, ttl, `${what}: renewed with another TTL`);
              }
              if (op === 'force-release') {
                assert.equal(reply.json?.success, true, what);
                assert.equal((reply.json?.lock as LockJson | undefined)?.id, lock.id, what);
                released = true;
              }
              if (envelope) {
                assert.deepEqual(reply.json, { success: true, message: 'Lock released successfully' }, what);
                released = true;
              }
            } else {
              expectError(reply, what, 404, op === 'renew' ? ['LOCK_NOT_HELD'] : ['LOCK_NOT_FOUND']);
              if (envelope) assert.equal(reply.json?.success, false, `${what}: the release envelope`);
            }
          }
          assert.equal(
            await isHeld(lock.id),
            !released,
            `${what}: the lock is ${released ? 'still held' : 'gone'}`,
          );
          if (!released) await send('DELETE', `${API}/lock/${lock.id}`);
        }),
        params(100),
      );
    });

    /** A query string from pairs, values percent-encoded as a browser would. */
    const query = (pairs: ReadonlyArray<readonly [string, string]>) =>
      pairs.length === 0 ? '' : `?${pairs.map(([key, value]) => `${pct(key)}=${pct(value)}`).join('&')}`;
    const positiveValue = fc.oneof(
      fc.constantFrom(
        '1',
        '2',
        '0',
        '-1',
        '01',
        '1.0',
        '1e3',
        '+1',
        ' 1',
        '1 ',
        '0x1',
        '999999999',
        '1000000000',
        '9007199254740993',
        '',
        'NaN',
        'Infinity',
        '١',
        '１',
        '1000',
        '1001',
      ),
      fc.integer({ min: -5, max: 1100 }).map(String),
      shortText,
    );
    /** The value a query parameter has once several of the same name became an array: invalid. */
    const judgeQuery = (
      pairs: ReadonlyArray<readonly [string, string]>,
      rules: Record<string, (value: string) => boolean>,
    ): { bad: string[]; values: Record<string, string> } => {
      const bad: string[] = [];
      const values: Record<string, string> = {};
      const counts = new Map<string, number>();
      for (const [key] of pairs) counts.set(key, (counts.get(key) ?? 0) + 1);
      for (const [key, value] of pairs) {
        const rule = rules[key];
        if (!own(rules, key) || rule === undefined) bad.push(key);
        else if ((counts.get(key) ?? 0) > 1 || !rule(utf8(value))) bad.push(key);
        else values[key] = utf8(value);
      }
      return { bad, values };
    };
    const queryKey = (known: readonly string[]) =>
      fc.oneof(
        { weight: 8, arbitrary: fc.constantFrom(...known) },
        {
          weight: 1,
          arbitrary: fc.constantFrom(
            ...words('PAGE per-page perPage __proto__ constructor toString hasOwnProperty a[b] service[]'),
          ),
        },
      );

    test('GET /locks/list: random queries are 200 exactly when valid, and every lock listed matches the filters', async () => {
      const pair = queryKey(['page', 'per_page', 'service', 'who']).chain((key) =>
        (key === 'page' || key === 'per_page' ? positiveValue : text).map((value) => [key, value] as const),
      );
      await fc.assert(
        fc.asyncProperty(fc.array(pair, { maxLength: 4 }), async (pairs) => {
          const path = `${API}/locks/list${query(pairs)}`;
          const what = describeRequest('GET', path);
          const reply = await send('GET', path);
          if (beyondParser(reply, path, what)) return;
          const { bad, values } = judgeQuery(pairs, {
            page: (v) => POSITIVE.test(v),
            per_page: (v) => POSITIVE.test(v) && Number(v) <= MAX_PER_PAGE,
            service: nameOk,
            who: nameOk,
          });
          if (bad.length > 0) return expectInvalid(reply, what, bad);
          expectSane(reply, what);
          assert.equal(reply.status, 200, `${what}: ${reply.text}`);
          const page = Number(values.page ?? 1);
          const perPage = Number(values.per_page ?? 100);
          assert.equal(reply.json?.page, page, what);
          assert.equal(reply.json?.perPage, perPage, what);
          const locks = reply.json?.locks as unknown[];
          assert.ok(Array.isArray(locks) && locks.length <= perPage, what);
          assert.ok(
            Number.isSafeInteger(reply.json?.total) && Number(reply.json?.total) >= locks.length,
            what,
          );
          for (const lock of locks.map((l) => expectLockShape(l, what))) {
            if (values.service !== undefined)
              assert.equal(lock.service, nfc(values.service), `${what}: service filter`);
            if (values.who !== undefined) assert.equal(lock.who, nfc(values.who), `${what}: who filter`);
          }
        }),
        params(100),
      );
    });

    test('GET /queue/:service: 200 with that service exactly when the name is valid, whatever its length, else 400', async () => {
      const service = fc.oneof(
        text,
        fc.constantFrom('..', '.', '%', '/', 'a/b', '../../healthz', '?', '#', ''),
      );
      await fc.assert(
        fc.asyncProperty(service, fc.boolean(), async (name, hold) => {
          let holder: LockJson | undefined;
          if (hold && nameOk(name) && !LONE_SURROGATE.test(name)) {
            const taken = await send('POST', `${API}/lock`, {
              headers: JSON_HEADERS,
              body: JSON.stringify({ service: name, who: 'queue-fuzzer' }),
            });
            if (taken.status === 201) holder = expectLockShape(taken.json, 'queue holder');
          }
          const path = `${API}/queue/${pct(name)}`;
          const what = describeRequest('GET', path);
          const reply = await send('GET', path);
          if (beyondParser(reply, path, what)) return;
          const seen = utf8(name);
          if (!nameOk(seen)) return expectInvalid(reply, what, ['service']);
          expectSane(reply, what);
          assert.equal(reply.status, 200, `${what}: ${reply.text.slice(0, 300)}`);
          assert.equal(reply.json?.service, nfc(seen), what);
          assert.ok(Array.isArray(reply.json?.waiters), what);
          if (reply.json?.holder !== null) {
            assert.equal(expectLockShape(reply.json?.holder, what).service, nfc(seen), what);
          }
          if (holder) {
            assert.equal((reply.json?.holder as LockJson | null)?.id, holder.id, `${what}: not the holder`);
            await send('DELETE', `${API}/lock/${holder.id}`);
          }
        }),
        params(100, [
          ['q'.repeat(101), true],
          [ofCodePoints('界', 256), true],
        ]),
      );
    });

    const timestamp = fc.oneof(
      fc
        .tuple(
          fc.date({
            min: new Date('0000-01-01T00:00:00Z'),
            max: new Date('9999-12-31T23:59:59Z'),
            noInvalidDate: true,
          }),
          fc.constantFrom('Z', '+00:00', '-05:30', '+14:00', '-23:59'),
          fc.integer({ min: 0, max: 9 }),
        )
        .map(([date, zone, digits]) => {
          const base = date.toISOString().slice(0, 19);
          const fraction = digits === 0 ? '' : `.${'123456789'.slice(0, digits)}`;
          return `${base}${fraction}${zone}`;
        }),
      fc
        .tuple(
          fc.integer({ min: 0, max: 9999 }),
          fc.integer({ min: 0, max: 99 }),
          fc.integer({ min: 0, max: 99 }),
          fc.integer({ min: 0, max: 99 }),
          fc.constantFrom('Z', '+99:99', '-00:60', '+24:00'),
        )
        .map(
          ([y, mo, d, h, zone]) =>
            `${String(y).padStart(4, '0')}-${String(mo).padStart(2, '0')}-${String(d).padStart(2, '0')}T${String(h).padStart(2, '0')}:61:60${zone}`,
        ),
      fc.constantFrom(
        '2024-01-01',
        '2024-01-01T00:00:00',
        '2024-01-01 00:00:00Z',
        '2024-01-01t00:00:00z',
        '+275760-09-13T00:00:00Z',
        '2024-01-01T00:00:00.Z',
        '2024-01-01T00:00:00.1234567890Z',
        '0000-00-00T00:00:00Z',
        '2024-02-30T00:00:00Z',
        '2024-01-01T24:00:00Z',
        'yesterday',
        '',
      ),
      shortText,
    );

    test('GET /history: random queries are 200 exactly when valid, newest first, filtered, paged', async () => {
      const pair = queryKey(['service', 'who', 'since', 'until', 'limit', 'before']).chain((key) => {
        const value =
          key === 'limit'
            ? positiveValue
            : key === 'before'
              ? fc.oneof(
                  positiveValue,
                  fc.constantFrom('0', '000000000000001', '999999999999999', '1000000000000000'),
                )
              : key === 'since' || key === 'until'
                ? timestamp
                : text;
        return value.map((v) => [key, v] as const);
      });
      await fc.assert(
        fc.asyncProperty(fc.array(pair, { maxLength: 4 }), async (pairs) => {
          const path = `${API}/history${query(pairs)}`;
          const what = describeRequest('GET', path);
          const reply = await send('GET', path);
          if (beyondParser(reply, path, what)) return;
          const date = (v: string) => validTimestamp(v) && !Number.isNaN(new Date(v).getTime());
          const { bad, values } = judgeQuery(pairs, {
            service: nameOk,
            who: nameOk,
            since: date,
            until: date,
            limit: (v) => POSITIVE.test(v) && Number(v) <= MAX_HISTORY_LIMIT,
            before: (v) => EVENT_ID.test(v) && Number(v) >= 1,
          });
          if (bad.length > 0) return expectInvalid(reply, what, bad);
          expectSane(reply, what);
          assert.equal(reply.status, 200, `${what}: ${reply.text.slice(0, 300)}`);
          const limit = Number(values.limit ?? 100);
          const events = reply.json?.events as Array<Record<string, unknown>>;
          assert.ok(Array.isArray(events) && events.length <= limit, what);
          let previous = Number.POSITIVE_INFINITY;
          for (const event of events) {
            const id = Number(event.id);
            assert.ok(Number.isSafeInteger(id) && id < previous, `${what}: not newest first`);
            previous = id;
            assert.ok(EVENT_TYPES.includes(String(event.type)), what);
            if (values.service !== undefined)
              assert.equal(event.service, nfc(values.service), `${what}: service filter`);
            if (values.who !== undefined) assert.equal(event.who, nfc(values.who), `${what}: who filter`);
            const at = Date.parse(String(event.at));
            if (values.since !== undefined)
              assert.ok(at >= new Date(values.since).getTime(), `${what}: since`);
            if (values.until !== undefined)
              assert.ok(at < new Date(values.until).getTime(), `${what}: until`);
            if (values.before !== undefined) assert.ok(id < Number(values.before), `${what}: before`);
          }
          const expectedNext = events.length === limit ? (events.at(-1)?.id ?? null) : null;
          assert.equal(reply.json?.nextBefore, expectedNext, `${what}: nextBefore`);
        }),
        params(120),
      );
    });

    /**
     * Opens GET /watch, reads the whole answer of a refusal or, from a stream, `retry:` and the
     * first message, then hangs up. A stream that resumed after the last event of its service
     * (undefined: of any) says nothing until an event happens: it is poked until it does.
     */
    const openWatch = async (path: string, headers: Record<string, string>, service: string | undefined) => {
      // Its own socket, so that hanging up does not disturb the agent's.
      const request = http.request({
        host: '127.0.0.1',
        port: server.httpPort,
        path,
        headers,
        agent: false,
        signal: AbortSignal.timeout(10_000),
      });
      let failure: Error | undefined;
      let response: http.IncomingMessage | undefined;
      let text = '';
      let ended = false;
      request.once('error', (error) => {
        failure ??= error;
      });
      request.once('response', (answer) => {
        response = answer;
        answer.setEncoding('utf8');
        answer.on('data', (chunk: string) => {
          text += chunk;
        });
        answer.once('end', () => {
          ended = true;
        });
        // Cut short after the head: what came is the answer.
        answer.once('error', () => {
          ended = true;
        });
      });
      request.end();
      try {
        await untilHeard(
          () =>
            failure !== undefined ||
            ended ||
            (response?.statusCode === 200 && (text.match(/\n\n/g)?.length ?? 0) >= 2) ||
            undefined,
          `GET ${path.slice(0, 200)} to answer`,
          async () => {
            if (response?.statusCode === 200) await poke(service);
          },
        );
        if (failure !== undefined) throw failure;
        return {
          status: response?.statusCode ?? 0,
          contentType: String(response?.headers['content-type']),
          text,
        };
      } finally {
        request.destroy();
      }
    };

    test('GET /watch: random service, lastEventId and Last-Event-ID garbage; 200 event-stream exactly when valid; streams are released', async () => {
      const eventIdValue = fc.oneof(
        fc.constantFrom(
          '0',
          '1',
          '999999999999999',
          '1000000000000000',
          '-1',
          '1.5',
          '0x10',
          ' 7',
          '7 ',
          '',
          'abc',
          '١',
          '9'.repeat(400),
        ),
        fc.nat().map(String),
        shortText,
      );
      // What an HTTP header can carry: tab, visible ASCII, space and bytes 0x80 to 0xff.
      const headerValue = fc
        .oneof(
          eventIdValue,
          fc.string({
            unit: fc.integer({ min: 0x20, max: 0xff }).map((c) => String.fromCharCode(c)),
            maxLength: 40,
          }),
          fc.integer({ min: 100, max: 8000 }).map((n) => '1'.repeat(n)),
        )
        .filter((value) => /^[\t\x20-\x7e\x80-\xff]*$/.test(value));
      const pair = queryKey(['service', 'lastEventId']).chain((key) =>
        (key === 'lastEventId' ? eventIdValue : text).map((value) => [key, value] as const),
      );
      await fc.assert(
        fc.asyncProperty(fc.array(pair, { maxLength: 3 }), fc.option(headerValue), async (pairs, header) => {
          const path = `${API}/watch${query(pairs)}`;
          // Header values as the server's parser sees them: without surrounding spaces and tabs.
          const seenHeader = header === null ? undefined : header.replace(/^[ \t]+|[ \t]+$/g, '');
          const what = `${describeRequest('GET', path)} Last-Event-ID ${JSON.stringify(header)}`;
          const { bad, values } = judgeQuery(pairs, {
            service: nameOk,
            lastEventId: (v) => EVENT_ID.test(v),
          });
          const reply = await openWatch(
            path,
            header === null ? {} : { 'last-event-id': header },
            values.service,
          );
          if (beyondParser(reply, `${path}${header ?? ''}`, what)) return;
          if (seenHeader !== undefined && seenHeader !== '' && !EVENT_ID.test(seenHeader))
            bad.push('Last-Event-ID');
          if (bad.length > 0) {
            assert.equal(reply.status, 400, `${what}: ${reply.status} ${reply.text.slice(0, 300)}`);
            const json = JSON.parse(reply.text) as Record<string, unknown>;
            assert.equal(json.code, 'INVALID_ARGUMENT', what);
            if (json.field !== undefined)
              assert.ok(bad.includes(String(json.field)), `${what}: field ${String(json.field)}`);
            return;
          }
          assert.equal(reply.status, 200, `${what}: ${reply.status} ${reply.text.slice(0, 300)}`);
          assert.match(reply.contentType, /^text\/event-stream/, what);
          assert.ok(
            reply.text.startsWith('retry: 1000\n\n'),
            `${what}: ${JSON.stringify(reply.text.slice(0, 100))}`,
          );
          // Then a message: the snapshot, or (resuming) an event replayed, or the one poked.
          const first = reply.text.slice('retry: 1000\n\n'.length);
          assert.match(first, /^id: \d+\nevent: [a-z-]+\ndata: \{/, `${what}: no message after retry:`);
          const resumed = (seenHeader !== undefined && seenHeader !== '') || values.lastEventId !== undefined;
          if (!resumed) assert.match(first, /^id: \d+\nevent: snapshot\n/, `${what}: no snapshot first`);
        }),
        params(60),
      );
      // Every stream the fuzzing opened and dropped is closed on the server too.
      await waitFor(async () => /^tracker_watchers 0$/m.test((await send('GET', '/metrics')).text), {
        what: 'no watch stream left open on the server (tracker_watchers 0)',
        intervalMs: 50,
      });
    });

    test('/healthz, /readyz, /metrics, /openapi.json: any query, method and header; GET and HEAD answer, others 405', async () => {
      const ops = ['/healthz', '/readyz', '/metrics', '/openapi.json'] as const;
      const method = fc.constantFrom(...words('GET HEAD POST PUT DELETE PATCH OPTIONS PROPFIND PURGE'));
      const rawQuery = fc.string({ unit: fc.constantFrom(...'ab=&%?+#;[]._~-1'.split('')), maxLength: 20 });
      const headerValue = fc.string({
        unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)),
        maxLength: 30,
      });
      await fc.assert(
        fc.asyncProperty(
          fc.constantFrom(...ops),
          method,
          rawQuery,
          fc.constantFrom(
            ...words('accept accept-encoding if-none-match x-forwarded-for authorization cookie'),
          ),
          headerValue,
          async (route, method, q, headerName, headerValue) => {
            const path = `${route}${q === '' ? '' : `?${q}`}`;
            const what = `${describeRequest(method, path)} ${headerName}: ${headerValue}`;
            const reply = await send(method, path, { headers: { [headerName]: headerValue } });
            expectSane(reply, what, method);
            if (method !== 'GET' && method !== 'HEAD') {
              expectError(reply, what, 405, ['METHOD_NOT_ALLOWED']);
              assert.equal(reply.headers.allow, 'GET, HEAD', what);
              return;
            }
            assert.equal(reply.status, 200, `${what}: ${reply.status} ${reply.text.slice(0, 200)}`);
            if (method === 'HEAD') return;
            if (route === '/healthz') assert.deepEqual(reply.json, { status: 'ok' }, what);
            if (route === '/readyz') assert.deepEqual(reply.json, { status: 'ready' }, what);
            if (route === '/metrics') assert.match(reply.text, /^tracker_locks_held \d+$/m, what);
            if (route === '/openapi.json') assert.match(String(reply.json?.openapi), /^3\.1\./, what);
          },
        ),
        params(60),
      );
    });

    const segment = fc.oneof(
      fc.constantFrom(
        '..',
        '.',
        '%2e%2e',
        '%2E%2E',
        '%2e',
        '..%2f',
        '%2f',
        '%2F',
        '%5c',
        '\\',
        '%00',
        '%',
        '%zz',
        '%c0%af',
        '%ed%a0%80',
        '%ff',
        '',
        ';',
        ';a=b',
        '~',
        '*',
        '@',
        ':',
        'lock',
        'locks',
        'unlock',
        'list',
        'renew',
        'force-release',
        'queue',
        'history',
        'watch',
        'api',
        'v1alpha1',
        'assets',
        'index.html',
        'app.js',
        'healthz',
        'docs',
        '..;',
        '%252e%252e',
        'package.json',
        'etc',
        'passwd',
        '....//',
      ),
      fc.string({ unit: 'binary', maxLength: 16 }).map(pct),
      fc.string({ unit: fc.constantFrom(...'abc./%;'.split('')), maxLength: 10 }),
      fc.uuid().map((id) => id.toUpperCase()),
    );
    const pathArb = fc
      .tuple(
        fc.constantFrom(
          ...words('/ /api/v1alpha1/ // /api/v1alpha1// /assets/ /api/v1alpha1/lock/ /docs/ /./'),
        ),
        fc.array(segment, { maxLength: 6 }),
        fc.oneof(
          fc.constantFrom('', '/', '?', '?a=b', '#frag', '?x=%zz', '?page=1&page=2', '?%'),
          fc
            .string({ unit: fc.constantFrom(...'ab=&%?+#;[]._~-1\'"<>{}|^`'.split('')), maxLength: 24 })
            .map((q) => `?${q}`),
        ),
        fc.option(fc.integer({ min: 200, max: 8000 }), { freq: 6 }),
      )
      .map(
        ([prefix, parts, suffix, long]) =>
          `${prefix}${parts.join('/')}${long ? 'p'.repeat(long) : ''}${suffix}`,
      );

    test('any method on any path (dot segments, encoded slashes, NUL, encoded bytes, up to 8 KB): never a 5xx, JSON errors, nothing outside the dashboard served', async () => {
      const method = fc.constantFrom(...words('GET HEAD POST PUT DELETE PATCH OPTIONS TRACE SEARCH'));
      await fc.assert(
        fc.asyncProperty(
          method,
          pathArb,
          fc.option(fc.constantFrom('{}', '{"service":"x","who":"y"}', 'garbage')),
          async (method, path, body) => {
            const withBody = body !== null && method !== 'GET' && method !== 'HEAD' && method !== 'TRACE';
            const what = describeRequest(method, path, withBody ? body : undefined);
            const reply = await send(method, path, withBody ? { headers: JSON_HEADERS, body } : {});
            expectSane(reply, what, method);
            assert.ok(!reply.text.includes('"name": "tracker-lock"'), `${what}: served package.json`);
            assert.ok(!/root:.*:0:0:/.test(reply.text), `${what}: served /etc/passwd`);
            assert.ok(!reply.text.includes('BEGIN PRIVATE KEY'), `${what}: served a key`);
          },
        ),
        params(120),
      );
    });

    test('request lines and headers too long for the HTTP parser (over 16 KiB) answer a JSON error with a code', async () => {
      const cases = fc.oneof(
        fc
          .integer({ min: 17_000, max: 40_000 })
          .map((n) => ({ path: `/api/v1alpha1/lock/${'x'.repeat(n)}`, header: '' })),
        fc.integer({ min: 17_000, max: 40_000 }).map((n) => ({ path: '/healthz', header: 'y'.repeat(n) })),
      );
      await fc.assert(
        fc.asyncProperty(cases, async ({ path, header }) => {
          const what = `GET ${path.slice(0, 40)}… (${path.length} chars), header of ${header.length} bytes`;
          const reply = await send('GET', path, { headers: header ? { 'x-filler': header } : {} });
          assert.ok([414, 431].includes(reply.status) || reply.status === 404, `${what}: ${reply.status}`);
          expectSane(reply, what);
        }),
        params(6),
      );
    });

    /**
     * Bytes straight onto a socket; the answer, or null when the server just closed it. A
     * server that does neither (it was sent a half-closed request) within `ms` fails the test.
     */
    const rawHttp = (bytes: Buffer, ms = 5000) =>
      new Promise<{ status: number | null; text: string }>((resolve, reject) => {
        const socket = net.connect(server.httpPort, '127.0.0.1');
        const chunks: Buffer[] = [];
        const deadline = AbortSignal.timeout(ms);
        const hung = () => {
          socket.destroy();
          reject(new Error(`neither an answer nor a close within ${ms} ms`));
        };
        deadline.addEventListener('abort', hung, { once: true });
        const finish = () => {
          deadline.removeEventListener('abort', hung);
          socket.destroy();
          const text = Buffer.concat(chunks).toString('latin1');
          const match = /^HTTP\/1\.[01] (\d{3})/.exec(text);
          resolve({ status: match ? Number(match[1]) : null, text });
        };
        socket.on('data', (chunk: Buffer) => {
          chunks.push(chunk);
          // One complete response is enough.
          const text = Buffer.concat(chunks).toString('latin1');
          const end = text.indexOf('\r\n\r\n');
          const length = /\r\ncontent-length: (\d+)/i.exec(text)?.[1];
          if (end >= 0 && length !== undefined && text.length - end - 4 >= Number(length)) finish();
        });
        socket.once('close', finish);
        socket.once('error', finish);
        // Half-close: a request cut short ends in the parser's error, not in a wait.
        socket.end(bytes);
      });

    test('raw HTTP bytes (broken request lines, NUL, CR, obs-fold, bad Content-Length, bad chunks): never a 5xx, errors are JSON with a code', async () => {
      const method = fc.constantFrom(
        'GET',
        'POST',
        'DELETE',
        'get',
        'G ET',
        '',
        'GET\u0000',
        'CONNECT',
        'PRI',
        'TRACE',
      );
      const target = fc.oneof(
        fc.constantFrom(
          '/healthz',
          '/api/v1alpha1/lock',
          '/api/v1alpha1/lock/\u0000',
          '/api/v1alpha1/lock/a b',
          '/api/v1alpha1/lock/\u00ff\u00fe',
          '/api/v1alpha1/locks/list?page=\u0001',
          'http://evil.example/healthz',
          '*',
          '',
          '/%',
          '/\r/',
          'healthz',
        ),
        fc
          .string({
            unit: fc.integer({ min: 0, max: 255 }).map((c) => String.fromCharCode(c)),
            maxLength: 30,
          })
          .map((t) => `/${t}`),
      );
      const version = fc.constantFrom(
        'HTTP/1.1',
        'HTTP/1.0',
        'HTTP/2.0',
        'HTTP/9.9',
        'HTTP/1.1 ',
        '',
        'http/1.1',
        'HTTP/1.1\u0000',
      );
      const header = fc.constantFrom(
        'Host: x',
        'Host:',
        'Content-Length: -1',
        'Content-Length: abc',
        'Content-Length: 5\r\nContent-Length: 6',
        'Content-Length: 99999999999999999999',
        'Transfer-Encoding: chunked',
        'Transfer-Encoding: chunked\r\nContent-Length: 3',
        'Transfer-Encoding: gzip, chunked',
        'Content-Type: application/json',
        'X-Fold: a\r\n folded',
        'X-Nul: a\u0000b',
        'X-Bare-CR: a\rb',
        'Last-Event-ID: \u00ff\u00fe',
        ': no-name',
        'No-Colon',
        'Expect: 100-continue',
        'Connection: upgrade\r\nUpgrade: h2c',
      );
      const body = fc.constantFrom(
        '',
        '{}',
        'zz\r\n',
        '5\r\nhello\r\n0\r\n\r\n',
        'G\r\nx\r\n0\r\n\r\n',
        '{"service":"raw","who":"w"}',
      );
      await fc.assert(
        fc.asyncProperty(
          method,
          target,
          version,
          fc.array(header, { maxLength: 3 }),
          body,
          async (m, t, v, headers, b) => {
            const request = `${m} ${t} ${v}\r\n${['Host: fuzz', ...headers, 'Connection: close'].join('\r\n')}\r\n\r\n${b}`;
            const what = `raw request ${JSON.stringify(request)}`;
            const reply = await rawHttp(Buffer.from(request, 'latin1')).catch((error: Error) =>
              assert.fail(`${what}: ${error.message}`),
            );
            if (reply.status === null) return; // the server hung up: fine
            assert.ok(reply.status < 500, `${what} answered ${reply.text.slice(0, 500)}`);
            if (reply.status >= 400 && !m.startsWith('HEAD')) {
              // The first answer's body: its Content-Length bytes. (Bytes after a request the
              // server refused can be read as another request, and answered too.)
              const head = reply.text.indexOf('\r\n\r\n');
              const length = /\r\ncontent-length: (\d+)/i.exec(reply.text.slice(0, head))?.[1];
              const rest = reply.text.slice(head + 4);
              const bodyText = length === undefined ? rest : rest.slice(0, Number(length));
              let json: Record<string, unknown> | undefined;
              try {
                json = JSON.parse(bodyText) as Record<string, unknown>;
              } catch {
                json = undefined;
              }
              assert.equal(
                typeof json?.code,
                'string',
                `${what}: the ${reply.status} has no JSON code: ${bodyText.slice(0, 300)}`,
              );
            }
          },
        ),
        params(120),
      );
    });

    test('names, reasons with lone surrogates (via JSON escapes) are refused or kept exactly, never stored as something else', async () => {
      const id = randomUUID().slice(0, 8);
      const seen: string[] = [];
      for (const surrogate of LONE_SURROGATES) {
        const service = `lone-${id}-${surrogate}`;
        const body = JSON.stringify({ service, who: 'w' });
        const reply = await send('POST', `${API}/lock`, { headers: JSON_HEADERS, body });
        const what = describeRequest('POST', `${API}/lock`, body);
        if (reply.status === 400) {
          expectInvalid(reply, what, ['service']);
          continue;
        }
        assert.equal(reply.status, 201, `${what}: ${reply.text}`);
        seen.push(String(reply.json?.service));
        assert.equal(
          reply.json?.service,
          service,
          `${what}: stored as ${JSON.stringify(reply.json?.service)}`,
        );
      }
      // Distinct services never show as the same name.
      assert.equal(
        new Set(seen).size,
        seen.length,
        `two locks show the same service: ${JSON.stringify(seen)}`,
      );

      const lock = await freshLock('lone-reason');
      const reason = `because \udfff`;
      const body = JSON.stringify({ reason });
      const reply = await send('POST', `${API}/lock/${lock.id}/force-release`, {
        headers: JSON_HEADERS,
        body,
      });
      if (reply.status !== 400) {
        assert.equal(reply.status, 200, reply.text);
        const history = await send('GET', `${API}/history?service=${pct(lock.service)}&limit=10`);
        const event = ((history.json?.events ?? []) as Array<{ type: string; reason: string }>).find(
          (e) => e.type === 'force-released',
        );
        assert.equal(event?.reason, reason, `the reason was recorded as ${JSON.stringify(event?.reason)}`);
      }
    });
  });

  // -------------------------------------------------------------------------------------------
  describe('gRPC', () => {
    /** What proto-loader's fromObject makes of a JS value for a string field. */
    const asProtoString = (value: unknown) => (value === null || value === undefined ? '' : String(value));
    /** ...and for an int32 field. */
    const asInt32 = (value: unknown) => (value === null || value === undefined ? 0 : Number(value) | 0);
    /**
     * What the server decodes from a string the client sent. protobufjs writes a lone
     * surrogate of a short string (under 40 UTF-16 units) as 3 bytes that no UTF-8 decoder
     * accepts (3 × U+FFFD on the server), and that of a longer one with Node's encoder (U+FFFD).
     */
    const asDecoded = (value: string) =>
      value.length < 40 ? value.replace(/\p{Cs}/gu, '\ufffd\ufffd\ufffd') : utf8(value);

    const INT32_EDGES = [
      0,
      1,
      -1,
      2,
      3600,
      3601,
      MAX_TTL_SECONDS,
      MAX_TTL_SECONDS + 1,
      2 ** 31 - 1,
      -(2 ** 31),
      1000,
      1001,
    ];
    const int32 = fc.oneof(
      fc.constantFrom(...INT32_EDGES),
      fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }),
    );
    /** Wrong JS types the client coerces (strings, booleans, fractions, out of int32 range, NaN). */
    const wrongNumber = fc.constantFrom<unknown>(
      '12',
      'abc',
      true,
      false,
      null,
      1.9,
      -1.5,
      2 ** 32 + 1,
      2 ** 40,
      Number.NaN,
      '',
      '0x10',
      '1e3',
    );
    const stringField = fc.oneof(
      { weight: 6, arbitrary: text },
      { weight: 1, arbitrary: fc.constantFrom<unknown>(42, true, null, undefined, { a: 1 }, ['a', 'b'], '') },
    );

    test('CreateLock: random fields of right and wrong types; OK/ALREADY_EXISTS exactly when valid, else INVALID_ARGUMENT naming the field', async () => {
      const ttl = fc.oneof(int32, wrongNumber);
      // The only valid wait generated is 0 (see waitValue); waiting is in the examples.
      const WAIT_SERVICE = `grpc-wait-${randomUUID()}`;
      const wait = fc
        .oneof(fc.constant<unknown>(0), int32, wrongNumber)
        .filter((w) => !isInt(asInt32(w), 1, MAX_WAIT_SECONDS));
      await fc.assert(
        fc.asyncProperty(
          stringField,
          stringField,
          ttl,
          wait,
          async (service, who, ttlSeconds, waitSeconds) => {
            const request = { service, who, ttlSeconds, waitSeconds };
            const what = `CreateLock ${fc.stringify(request)}`;
            const result = await rpc<Record<string, unknown>>('CreateLock', request);
            const s = asDecoded(asProtoString(service));
            const w = asDecoded(asProtoString(who));
            const t = asInt32(ttlSeconds);
            const q = asInt32(waitSeconds);
            const bad = [
              ...(nameOk(s) ? [] : ['service']),
              ...(nameOk(w) ? [] : ['who']),
              ...(t === 0 || isInt(t, 1, MAX_TTL_SECONDS) ? [] : ['ttlSeconds']),
              ...(isInt(q, 0, MAX_WAIT_SECONDS) ? [] : ['waitSeconds']),
            ];
            if (bad.length > 0) return expectGrpcInvalid(result, what, bad);
            expectGrpcSane(result, what);
            if (!result.ok) {
              assert.equal(status[result.error.code], 'ALREADY_EXISTS', `${what}: ${result.error.details}`);
              assert.ok(['LOCK_HELD', 'WAIT_TIMEOUT'].includes(trackerCode(result.error)), what);
              return;
            }
            assert.match(String(result.value.id), UUID, what);
            assert.equal(result.value.service, nfc(s), `${what}: service came back different`);
            assert.equal(result.value.who, nfc(w), `${what}: who came back different`);
            assert.equal(result.value.ttlSeconds, t, what);
            assert.ok(Number(result.value.fencingToken) >= 1, what);
          },
        ),
        params(100, [
          [ofCodePoints('😀', 256), 'w', 0, 0],
          [ofCodePoints('😀', 257), 'w', 0, 0],
          // Waiting: a free service of its own, then the same service held (WAIT_TIMEOUT after 1 s).
          [WAIT_SERVICE, 'a', 0, 1],
          [WAIT_SERVICE, 'b', 0, 1],
        ]),
      );
      // Messages over 64 KiB are refused before any handler, like REST bodies (README).
      for (const size of [60_000, 70_000, 1_000_000]) {
        const result = await rpc('CreateLock', { service: 's'.repeat(size), who: 'w' });
        const expected = size > 64 * 1024 ? status.RESOURCE_EXHAUSTED : status.INVALID_ARGUMENT;
        assert.ok(!result.ok && result.error.code === expected, `CreateLock with a ${size}-byte service`);
      }
    });

    test('GetLock, UnLock, RenewLock, ForceReleaseLock: only the id itself, in any case, names a lock; bad ttl and reason are INVALID_ARGUMENT', async () => {
      const idWay = fc.oneof(
        {
          weight: 4,
          arbitrary: fc
            .constantFrom(
              'exact',
              'upper',
              'mixed',
              'braces',
              'short',
              'long',
              'padded',
              'urn',
              'no dashes',
              'nul',
            )
            .map((variant) => ({ variant, text: '' })),
        },
        { weight: 2, arbitrary: stringField.map((t) => ({ variant: 'random', text: t })) },
      );
      const ttl = fc.oneof(fc.constantFrom<unknown>(0, 1, 600), int32, wrongNumber);
      const reason = fc.oneof(
        stringField,
        fc.constantFrom(1024, 1025).map((n) => ofCodePoints('界', n)),
      );
      const method = fc.constantFrom('GetLock', 'UnLock', 'RenewLock', 'ForceReleaseLock');
      await fc.assert(
        fc.asyncProperty(method, idWay, ttl, reason, async (method, way, ttlSeconds, reasonValue) => {
          const lock = await freshLock('grpc-ids');
          const id = lock.id;
          const forms: Record<string, string> = {
            exact: id,
            upper: id.toUpperCase(),
            mixed: [...id].map((c, i) => (i % 2 ? c.toUpperCase() : c)).join(''),
            braces: `{${id}}`,
            short: id.slice(1),
            long: `${id}f`,
            padded: ` ${id}`,
            urn: `urn:uuid:${id}`,
            'no dashes': id.replaceAll('-', ''),
            nul: `${id}\u0000`,
          };
          const idValue: unknown = way.variant === 'random' ? way.text : forms[way.variant];
          const names = ['exact', 'upper', 'mixed'].includes(way.variant);
          const request: Record<string, unknown> = { id: idValue };
          if (method === 'RenewLock') request.ttlSeconds = ttlSeconds;
          if (method === 'ForceReleaseLock') request.reason = reasonValue;
          const what = `${method} ${fc.stringify(request)}`;
          const result = await rpc<Record<string, unknown>>(method, request);
          const t = asInt32(ttlSeconds);
          const r = asDecoded(asProtoString(reasonValue));
          let released = false;
          if (method === 'RenewLock' && !(t === 0 || isInt(t, 1, MAX_TTL_SECONDS))) {
            expectGrpcInvalid(result, what, ['ttlSeconds']);
          } else if (method === 'ForceReleaseLock' && !reasonOk(r)) {
            expectGrpcInvalid(result, what, ['reason']);
          } else if (names) {
            expectGrpcSane(result, what);
            assert.ok(result.ok, `${what}: ${!result.ok && result.error.details}`);
            if (method === 'GetLock') assert.equal(result.value.id, id, what);
            if (method === 'RenewLock')
              assert.equal(result.value.ttlSeconds, t, `${what}: renewed with another TTL`);
            if (method === 'UnLock') {
              assert.deepEqual(result.value, { success: true, message: 'Lock released successfully' }, what);
              released = true;
            }
            if (method === 'ForceReleaseLock') {
              assert.equal((result.value.lock as { id?: string } | undefined)?.id, id, what);
              released = true;
            }
          } else {
            expectGrpcError(
              result,
              what,
              status.NOT_FOUND,
              method === 'RenewLock' ? ['LOCK_NOT_HELD'] : ['LOCK_NOT_FOUND'],
            );
          }
          assert.equal(
            await isHeld(id),
            !released,
            `${what}: the lock is ${released ? 'still held' : 'gone'}`,
          );
          if (!released) await send('DELETE', `${API}/lock/${id}`);
        }),
        params(80),
      );
    });

    test('GetQueue: any service; OK with that service exactly when the name is valid, whatever its length', async () => {
      await fc.assert(
        fc.asyncProperty(stringField, async (service) => {
          const what = `GetQueue ${fc.stringify({ service })}`;
          const result = await rpc<Record<string, unknown>>('GetQueue', { service });
          const s = asDecoded(asProtoString(service));
          if (!nameOk(s)) return expectGrpcInvalid(result, what, ['service']);
          expectGrpcSane(result, what);
          assert.ok(result.ok, `${what}: ${!result.ok && result.error.details}`);
          assert.equal(result.value.service, nfc(s), what);
          assert.ok(Array.isArray(result.value.waiters), what);
        }),
        params(80, [['q'.repeat(101)], [ofCodePoints('界', 256)]]),
      );
    });

    test('ListLocks: int32 extremes for page and perPage, random filters; OK exactly when valid, every lock matches', async () => {
      const pageValue = fc.oneof(int32, wrongNumber, fc.integer({ min: 0, max: 3 }));
      await fc.assert(
        fc.asyncProperty(
          pageValue,
          pageValue,
          fc.option(stringField),
          fc.option(stringField),
          async (page, perPage, service, who) => {
            const request = { page, perPage, service, who };
            const what = `ListLocks ${fc.stringify(request)}`;
            const result = await rpc<Record<string, unknown>>('ListLocks', request);
            const p = asInt32(page);
            const pp = asInt32(perPage);
            const s = asDecoded(asProtoString(service));
            const w = asDecoded(asProtoString(who));
            const bad = [
              ...(p >= 0 ? [] : ['page']),
              ...(pp >= 0 && pp <= MAX_PER_PAGE ? [] : ['per_page']),
              ...(s === '' || nameOk(s) ? [] : ['service']),
              ...(w === '' || nameOk(w) ? [] : ['who']),
            ];
            if (bad.length > 0) return expectGrpcInvalid(result, what, bad);
            expectGrpcSane(result, what);
            assert.ok(result.ok, `${what}: ${!result.ok && result.error.details}`);
            assert.equal(result.value.page, p === 0 ? 1 : p, what);
            assert.equal(result.value.perPage, pp === 0 ? 100 : pp, what);
            const locks = result.value.locks as Array<{ service: string; who: string }>;
            assert.ok(locks.length <= (pp === 0 ? 100 : pp), what);
            for (const lock of locks) {
              if (s !== '') assert.equal(lock.service, nfc(s), `${what}: service filter`);
              if (w !== '') assert.equal(lock.who, nfc(w), `${what}: who filter`);
            }
          },
        ),
        params(100),
      );
    });

    test('GetHistory: random filters, RFC 3339 or not, int64 extremes for before; OK exactly when valid, filtered and paged', async () => {
      const timestampValue = fc.oneof(
        fc.constantFrom(
          '',
          '2024-01-01T00:00:00Z',
          '2024-01-01T10:00',
          '2024-01-01T',
          '2024-01-01Tgarbage',
          '2024-13-01T00:00:00Z',
          '2024-02-30T00:00:00Z',
          '2023-02-29T00:00:00Z',
          '2024-02-29T23:59:59+23:59',
          '2024-01-01T24:00:00Z',
          '9999-12-31T23:59:59.999Z',
          '0000-01-01T00:00:00Z',
          'yesterday',
        ),
        fc
          .date({
            min: new Date('0000-01-01T00:00:00Z'),
            max: new Date('9999-12-31T23:59:59Z'),
            noInvalidDate: true,
          })
          .map((d) => d.toISOString()),
        shortText,
      );
      const before = fc.oneof(
        fc.constantFrom(
          ...words(
            '0 1 -1 9223372036854775807 -9223372036854775808 9007199254740993 9007199254740991 18446744073709551615',
          ),
        ),
        fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }).map(String),
        fc.nat({ max: 100_000 }).map(String),
      );
      const limit = fc.oneof(int32, fc.integer({ min: 0, max: 1001 }));
      await fc.assert(
        fc.asyncProperty(
          fc.option(stringField),
          fc.option(stringField),
          timestampValue,
          timestampValue,
          limit,
          before,
          async (service, who, since, until, limitValue, beforeValue) => {
            const request = { service, who, since, until, limit: limitValue, before: beforeValue };
            const what = `GetHistory ${fc.stringify(request)}`;
            const result = await rpc<Record<string, unknown>>('GetHistory', request);
            const s = asDecoded(asProtoString(service));
            const w = asDecoded(asProtoString(who));
            const date = (v: string) => v === '' || validTimestamp(v);
            // int64 on the wire: what does not fit wraps (protobufjs's Long); the server reads a decimal string.
            const b = Number(BigInt.asIntN(64, BigInt(beforeValue)));
            const bad = [
              ...(s === '' || nameOk(s) ? [] : ['service']),
              ...(w === '' || nameOk(w) ? [] : ['who']),
              ...(date(since) ? [] : ['since']),
              ...(date(until) ? [] : ['until']),
              ...(limitValue === 0 || isInt(limitValue, 1, MAX_HISTORY_LIMIT) ? [] : ['limit']),
              ...(b === 0 || (Number.isSafeInteger(b) && b >= 1) ? [] : ['before']),
            ];
            if (bad.length > 0) return expectGrpcInvalid(result, what, bad);
            expectGrpcSane(result, what);
            assert.ok(result.ok, `${what}: ${!result.ok && result.error.details}`);
            const events = result.value.events as Array<{
              id: string;
              service: string;
              who: string;
              at: string;
              type: string;
            }>;
            const pageSize = limitValue === 0 ? 100 : limitValue;
            assert.ok(events.length <= pageSize, what);
            let previous = Number.POSITIVE_INFINITY;
            for (const event of events) {
              assert.ok(Number(event.id) < previous, `${what}: not newest first`);
              previous = Number(event.id);
              assert.ok(EVENT_TYPES.includes(event.type), what);
              if (s !== '') assert.equal(event.service, nfc(s), what);
              if (w !== '') assert.equal(event.who, nfc(w), what);
              if (since !== '')
                assert.ok(Date.parse(event.at) >= new Date(since).getTime(), `${what}: since`);
              if (until !== '') assert.ok(Date.parse(event.at) < new Date(until).getTime(), `${what}: until`);
              if (b !== 0) assert.ok(Number(event.id) < b, `${what}: before`);
            }
            assert.equal(
              result.value.nextBefore,
              events.length === pageSize ? events.at(-1)?.id : '0',
              `${what}: nextBefore`,
            );
          },
        ),
        params(120),
      );
    });

    test('WatchLocks: random service and last_event_id; a snapshot (or a resume) exactly when valid, cancelled quickly', async () => {
      const eventId = fc.oneof(
        fc.constantFrom(
          '',
          '0',
          '1',
          '999999999999999',
          '1000000000000000',
          '-1',
          'abc',
          ' 1',
          '1.0',
          '9'.repeat(300),
        ),
        fc.nat().map(String),
        shortText,
      );
      await fc.assert(
        fc.asyncProperty(fc.option(stringField), eventId, async (service, lastEventId) => {
          const request = { service, lastEventId };
          const what = `WatchLocks ${fc.stringify(request)}`;
          const s = asDecoded(asProtoString(service));
          const e = asDecoded(lastEventId);
          const bad = [
            ...(s === '' || nameOk(s) ? [] : ['service']),
            ...(e === '' || EVENT_ID.test(e) ? [] : ['last_event_id']),
          ];
          const call = (
            grpc.WatchLocks as (
              r: object,
              m: Metadata,
              o: object,
            ) => ClientReadableStream<Record<string, unknown>>
          )(request, new Metadata(), { deadline: Date.now() + 5000 });
          // A valid watch that resumed after the last event of its service says nothing until
          // one happens: it is poked.
          const outcome = await firstWord<Record<string, unknown>>(
            call,
            `${what} to answer`,
            bad.length > 0 ? null : () => poke(s === '' ? undefined : s),
          );
          if (bad.length > 0) {
            assert.ok(outcome.error, `${what}: no error: ${JSON.stringify(outcome)}`);
            expectGrpcInvalid({ ok: false, error: outcome.error }, what, bad);
            return;
          }
          assert.equal(outcome.error, undefined, `${what}: ${outcome.error?.code} ${outcome.error?.details}`);
          assert.ok(outcome.message, `${what}: the stream ended without a message`);
          if (e === '')
            assert.ok(
              outcome.message.snapshot,
              `${what}: no snapshot first: ${JSON.stringify(outcome.message)}`,
            );
        }),
        params(60),
      );
    });

    test('grpc.health.v1.Health/Check: any service name; SERVING for "" and the LockService, NOT_FOUND otherwise', async () => {
      await fc.assert(
        fc.asyncProperty(
          fc.oneof(stringField, fc.constantFrom('', SERVICE, `${SERVICE} `, SERVICE.toUpperCase())),
          async (service) => {
            const what = `Health/Check ${fc.stringify({ service })}`;
            const result = await new Promise<RpcResult<{ status: string }>>((resolve) => {
              const check = (health as unknown as Record<string, HealthCheck>).Check;
              assert.ok(check);
              check.call(
                health,
                { service },
                new Metadata(),
                { deadline: Date.now() + 5000 },
                (error, value) =>
                  resolve(error ? { ok: false, error } : { ok: true, value: value as { status: string } }),
              );
            });
            expectGrpcSane(result, what);
            const s = asDecoded(asProtoString(service));
            if (s === '' || s === SERVICE) {
              assert.ok(result.ok, `${what}: ${!result.ok && result.error.details}`);
              assert.equal(result.value.status, 'SERVING', what);
            } else {
              assert.ok(
                !result.ok && result.error.code === status.NOT_FOUND,
                `${what}: ${JSON.stringify(result)}`,
              );
            }
          },
        ),
        params(40),
      );
    });

    test('raw protobuf bytes to every method (and reflection, health, unknown methods): INTERNAL/INVALID_ARGUMENT at worst, never a crash', async () => {
      const varint = (n: number) => {
        const bytes: number[] = [];
        let v = n;
        while (v > 0x7f) {
          bytes.push((v & 0x7f) | 0x80);
          v = Math.floor(v / 128);
        }
        bytes.push(v);
        return bytes;
      };
      const tricky = fc.constantFrom(
        [0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f], // a string field claiming 4 GB
        [0x0a, 0x05, 0x61], // a string cut short
        [0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01], // an 11-byte varint
        [0x18, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01], // ttl_seconds = 2^63
        [0x0b, 0x0c], // a group
        [0x0c], // an end-group with no start
        [0x00], // field number 0
        [0xfa, 0xff, 0xff, 0xff, 0x0f, 0x00], // the largest field number
        [0x0d, 0x01, 0x02], // fixed32 cut short
        [0x0a, 0x03, 0xed, 0xa0, 0x80, 0x12, 0x01, 0x62], // a UTF-8-encoded surrogate as service
        [0x0a, 0x02, 0xc0, 0xaf, 0x12, 0x01, 0x62], // an overlong encoding
        [0x2a, 0x04, 0x0a, 0x02, 0x0a, 0x00], // nested junk in an unknown field
        [0x10, 0xff, 0xff, 0xff, 0xff, 0x0f], // who as a varint
        [0x28, 0x80, 0x80, 0x80, 0x80, 0x10], // limit beyond int32
        [0x30, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01], // before = -1
      );
      const structured = fc
        .array(
          fc.tuple(
            fc.integer({ min: 0, max: 40 }),
            fc.integer({ min: 0, max: 7 }),
            fc.uint8Array({ maxLength: 12 }),
          ),
          { maxLength: 6 },
        )
        .map((fields) =>
          fields.flatMap(([number, wire, payload]) => [
            ...varint(number * 8 + wire),
            ...(wire === 2 ? varint(payload.length) : []),
            ...payload,
          ]),
        );
      const bytes = fc
        .oneof(
          tricky,
          structured,
          fc.uint8Array({ maxLength: 64 }).map((a) => [...a]),
          fc.constant([] as number[]),
        )
        .map((b) => Buffer.from(b));
      const big = fc.integer({ min: 50_000, max: 120_000 }).map((n) => Buffer.alloc(n, 0x41));
      await fc.assert(
        fc.asyncProperty(
          fc.constantFrom(...RAW_METHODS),
          fc.oneof({ weight: 20, arbitrary: bytes }, { weight: 1, arbitrary: big }),
          async (method, payload) => {
            const what = `${method.path} with ${payload.length <= 64 ? payload.toString('hex') : `${payload.length} bytes`}`;
            const outcome = await rawCall(method, payload);
            if (outcome.error) {
              const { code, details } = outcome.error;
              assert.ok(code !== status.UNKNOWN, `${what}: UNKNOWN ${details}`);
              // Only a CreateLock waiting in line may rightly outlast the deadline.
              if (code === status.DEADLINE_EXCEEDED)
                assert.equal(method.path, `/${SERVICE}/CreateLock`, `${what}: no answer: ${details}`);
              // INTERNAL only from grpc-js failing to decode, never from a handler (tracker-code INTERNAL).
              assert.notEqual(
                trackerCode(outcome.error),
                'INTERNAL',
                `${what}: a handler failed: ${details}`,
              );
              if (code === status.INTERNAL) assert.match(details, /deserializ|parse|decode/i, what);
            }
          },
        ),
        params(100),
      );
    });
  });

  // -------------------------------------------------------------------------------------------
  describe('afterwards', () => {
    interface ListedLock {
      id: string;
      service: string;
      who: string;
      expiresAt: string | null;
      fencingToken: number;
      limit: number;
      mode: 'exclusive' | 'shared';
    }

    test('the store invariants hold: no service over its limit, each GET-able as listed, none expired, fencing tokens only grow', async () => {
      const started = Date.now();
      const locks: ListedLock[] = [];
      for (let page = 1; page <= 100; page++) {
        const reply = await send('GET', `${API}/locks/list?per_page=${MAX_PER_PAGE}&page=${page}`);
        assert.equal(reply.status, 200, reply.text);
        const batch = reply.json?.locks as ListedLock[];
        locks.push(...batch);
        if (batch.length < MAX_PER_PAGE) break;
      }
      assert.ok(locks.length > 0, 'the fuzzing left some locks held');

      const byService = new Map<string, ListedLock[]>();
      for (const lock of locks) byService.set(lock.service, [...(byService.get(lock.service) ?? []), lock]);
      // Never more exclusive holders than the limit they were granted under, never a shared
      // holder beside an exclusive one (one holder per service, for the guide's locks).
      const doubles = [...byService].filter(
        ([, held]) =>
          (held.some((l) => l.mode === 'shared') && held.some((l) => l.mode === 'exclusive')) ||
          held.filter((l) => l.mode === 'exclusive').length > Math.min(...held.map((l) => l.limit)),
      );
      assert.deepEqual(
        doubles.map(([service, held]) => ({ service, ids: held.map((l) => l.id) })),
        [],
        'services held by more than their limit, or shared beside exclusive',
      );
      assert.equal(new Set(locks.map((l) => l.id)).size, locks.length, 'a lock listed twice');

      for (const lock of locks) {
        if (lock.expiresAt !== null) {
          // Whole seconds, truncated: a lease may show a second that already began.
          assert.ok(
            Date.parse(lock.expiresAt) + 1000 > started - 100,
            `expired lock listed: ${JSON.stringify(lock)}`,
          );
        }
        const reply = await send('GET', `${API}/lock/${lock.id}`);
        if (reply.status === 404 && lock.expiresAt !== null && Date.parse(lock.expiresAt) < Date.now() + 1000)
          continue;
        assert.equal(reply.status, 200, `${lock.id}: ${reply.text}`);
        assert.deepEqual(reply.json, lock, 'GET /lock/{id} differs from the list');
      }

      // The whole history, newest first, page by page.
      const events: Array<{
        id: number;
        type: string;
        service: string;
        lock: { id: string; fencingToken: number | null };
      }> = [];
      let before: number | null = null;
      for (let i = 0; i < 200; i++) {
        const reply = await send(
          'GET',
          `${API}/history?limit=${MAX_HISTORY_LIMIT}${before === null ? '' : `&before=${before}`}`,
        );
        assert.equal(reply.status, 200, reply.text);
        events.push(...((reply.json?.events ?? []) as typeof events));
        before = reply.json?.nextBefore as number | null;
        if (before === null) break;
      }
      for (let i = 1; i < events.length; i++) {
        assert.ok(
          (events[i]?.id ?? 0) < (events[i - 1]?.id ?? 0),
          'history ids do not strictly decrease across pages',
        );
      }
      const acquired = new Map<string, Array<{ id: string; token: number }>>();
      for (const event of [...events].reverse()) {
        if (event.type !== 'acquired') continue;
        acquired.set(event.service, [
          ...(acquired.get(event.service) ?? []),
          { id: event.lock.id, token: Number(event.lock.fencingToken) },
        ]);
      }
      for (const [service, grants] of acquired) {
        for (let i = 1; i < grants.length; i++) {
          assert.ok(
            (grants[i]?.token ?? 0) > (grants[i - 1]?.token ?? 0),
            `fencing tokens of ${JSON.stringify(service)} do not grow: ${JSON.stringify(grants)}`,
          );
        }
      }
      // Each held lock is its service's latest grant, with the same token.
      for (const lock of locks) {
        const latest = acquired.get(lock.service)?.at(-1);
        assert.deepEqual(
          latest,
          { id: lock.id, token: lock.fencingToken },
          `the latest grant of ${JSON.stringify(lock.service)}`,
        );
      }

      // gRPC lists the same locks (those that cannot expire meanwhile).
      const stable = (expiresAt: string | null) =>
        expiresAt === null || expiresAt === '' || Date.parse(expiresAt) > Date.now() + 10_000;
      const viaGrpc: string[] = [];
      for (let page = 1; page <= 100; page++) {
        const result = await rpc<{ locks: Array<{ id: string; expiresAt: string }> }>('ListLocks', {
          page,
          perPage: MAX_PER_PAGE,
        });
        assert.ok(result.ok, !result.ok ? result.error.details : '');
        viaGrpc.push(...result.value.locks.filter((l) => stable(l.expiresAt)).map((l) => l.id));
        if (result.value.locks.length < MAX_PER_PAGE) break;
      }
      const viaRest = locks.filter((l) => stable(l.expiresAt)).map((l) => l.id);
      assert.deepEqual(new Set(viaGrpc), new Set(viaRest), 'gRPC and REST list different locks');

      // Metrics name routes as declared, never by the (unbounded) URLs the fuzzing sent.
      const metrics = await send('GET', '/metrics');
      const routes = new Set([...metrics.text.matchAll(/route="([^"]*)"/g)].map((m) => m[1]));
      assert.ok(routes.size <= 40, `too many route labels: ${[...routes].join(' ')}`);
      for (const route of routes)
        assert.ok(route === '(unmatched)' || !/%|\.\./.test(String(route)), `route label ${route}`);
    });
  });
});

// ---------------------------------------------------------------------------------------------
// A gRPC client that sends and receives raw bytes, for every method the server has.

const identity = (buffer: Buffer) => buffer;
interface RawMethod {
  readonly path: string;
  readonly kind: 'unary' | 'server-stream' | 'bidi';
}
const RAW_METHODS: readonly RawMethod[] = [
  ...[
    'CreateLock',
    'GetLock',
    'RenewLock',
    'UnLock',
    'GetQueue',
    'ListLocks',
    'ForceReleaseLock',
    'GetHistory',
    'NoSuchMethod',
  ].map((name) => ({ path: `/${SERVICE}/${name}`, kind: 'unary' as const })),
  { path: `/${SERVICE}/WatchLocks`, kind: 'server-stream' },
  { path: '/grpc.health.v1.Health/Check', kind: 'unary' },
  { path: '/grpc.health.v1.Health/Watch', kind: 'server-stream' },
  { path: '/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo', kind: 'bidi' },
  { path: '/grpc.reflection.v1.ServerReflection/ServerReflectionInfo', kind: 'bidi' },
  { path: '/no.such.Service/Method', kind: 'unary' },
];
/** A WatchLocksRequest from bytes, as the server's proto-loader decodes it; throws when they do not decode. */
const watchLocksRequest = (() => {
  const definition = loadSync(PROTO_FILE, { keepCase: false, defaults: true, longs: String });
  const method = (definition[SERVICE] as ServiceDefinition).WatchLocks;
  assert.ok(method);
  return (bytes: Buffer) => method.requestDeserialize(bytes) as { service: string; lastEventId: string };
})();
const RawClient = makeGenericClientConstructor(
  Object.fromEntries(
    RAW_METHODS.map((method) => [
      method.path,
      {
        path: method.path,
        requestStream: method.kind === 'bidi',
        responseStream: method.kind !== 'unary',
        requestSerialize: identity,
        requestDeserialize: identity,
        responseSerialize: identity,
        responseDeserialize: identity,
      },
    ]),
  ),
  'Raw',
);
