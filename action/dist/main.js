// Built by scripts/build-action.mjs from action/src/ (npm run build:action): do not edit.

// action/src/main.ts
import { spawn } from "node:child_process";
import { closeSync, mkdirSync, openSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

// src/cli/lock-env.ts
function lockEnv(lock) {
  return {
    TRACKER_LOCK_ID: lock.id,
    TRACKER_FENCING_TOKEN: String(lock.fencingToken),
    TRACKER_SERVICE: lock.service,
    ...resourceEnv([lock])
  };
}
function groupEnv(group) {
  return { TRACKER_GROUP_ID: group.id, ...resourceEnv(group.locks) };
}
function resourceEnv(locks) {
  const env = {
    TRACKER_RESOURCES: locks.map((lock) => lock.service).join(","),
    TRACKER_FENCING_TOKENS: locks.map((lock) => String(lock.fencingToken)).join(",")
  };
  locks.forEach((lock, index) => {
    env[`TRACKER_RESOURCE_${index}`] = lock.service;
    const properties = Object.entries(lock.resource?.properties ?? {}).sort(([a], [b]) => a < b ? -1 : 1);
    for (const [key, value] of properties) {
      env[`TRACKER_RESOURCE_${index}_${key.toUpperCase().replace(/[^A-Z0-9]/g, "_")}`] = value;
    }
  });
  return env;
}

// src/sdk/errors.ts
var TrackerApiError = class extends Error {
  constructor(message, code, status, field) {
    super(message);
    this.code = code;
    this.status = status;
    this.field = field;
  }
  code;
  status;
  field;
  name = "TrackerApiError";
};
var LockHeldError = class extends TrackerApiError {
  constructor(message, existingLock, holders2 = [existingLock]) {
    super(message, "LOCK_HELD", 409);
    this.existingLock = existingLock;
    this.holders = holders2;
  }
  existingLock;
  holders;
  name = "LockHeldError";
};
var WaitTimeoutError = class extends TrackerApiError {
  constructor(message, existingLock, holders2 = [existingLock]) {
    super(message, "WAIT_TIMEOUT", 409);
    this.existingLock = existingLock;
    this.holders = holders2;
  }
  existingLock;
  holders;
  name = "WaitTimeoutError";
};
var LimitMismatchError = class extends TrackerApiError {
  constructor(message, service, limit) {
    super(message, "LIMIT_MISMATCH", 409, "limit");
    this.service = service;
    this.limit = limit;
  }
  service;
  limit;
  name = "LimitMismatchError";
};
var NoSuchLabelError = class extends TrackerApiError {
  constructor(message, label) {
    super(message, "NO_SUCH_LABEL", 404, "label");
    this.label = label;
  }
  label;
  name = "NoSuchLabelError";
};
var ResourceNotFoundError = class extends TrackerApiError {
  name = "ResourceNotFoundError";
  constructor(message) {
    super(message, "RESOURCE_NOT_FOUND", 404);
  }
};
var ResourceInUseError = class extends TrackerApiError {
  name = "ResourceInUseError";
  constructor(message) {
    super(message, "RESOURCE_IN_USE", 409);
  }
};
var LockNotFoundError = class extends TrackerApiError {
  name = "LockNotFoundError";
  constructor(message) {
    super(message, "LOCK_NOT_FOUND", 404);
  }
};
var LockNotHeldError = class extends TrackerApiError {
  name = "LockNotHeldError";
  constructor(message) {
    super(message, "LOCK_NOT_HELD", 404);
  }
};
var StoreUnavailableError = class extends TrackerApiError {
  name = "StoreUnavailableError";
  constructor(message, status = 503) {
    super(message, "STORE_UNAVAILABLE", status);
  }
};
var UnauthenticatedError = class extends TrackerApiError {
  name = "UnauthenticatedError";
  constructor(message) {
    super(message, "UNAUTHENTICATED", 401);
  }
};
var PermissionDeniedError = class extends TrackerApiError {
  name = "PermissionDeniedError";
  constructor(message) {
    super(message, "PERMISSION_DENIED", 403);
  }
};
var RateLimitedError = class extends TrackerApiError {
  constructor(message, retryAfterSeconds2) {
    super(message, "RATE_LIMITED", 429);
    this.retryAfterSeconds = retryAfterSeconds2;
  }
  retryAfterSeconds;
  name = "RateLimitedError";
};
var LockEndedError = class extends TrackerApiError {
  constructor(message, lockId) {
    super(message, "LOCK_ENDED", 409);
    this.lockId = lockId;
  }
  lockId;
  name = "LockEndedError";
};
var IdempotencyKeyReusedError = class extends TrackerApiError {
  name = "IdempotencyKeyReusedError";
  constructor(message) {
    super(message, "IDEMPOTENCY_KEY_REUSED", 422, "Idempotency-Key");
  }
};
function errorFromResponse(status, body, retryAfter) {
  const message = body.error ?? `HTTP ${status}`;
  switch (body.code) {
    case "LOCK_HELD":
      if (body.existingLock) return new LockHeldError(message, body.existingLock, body.holders);
      break;
    case "WAIT_TIMEOUT":
      if (body.existingLock) return new WaitTimeoutError(message, body.existingLock, body.holders);
      break;
    case "LIMIT_MISMATCH":
      if (body.service !== void 0 && body.limit !== void 0) {
        return new LimitMismatchError(message, body.service, body.limit);
      }
      break;
    case "NO_SUCH_LABEL":
      if (body.label !== void 0) return new NoSuchLabelError(message, body.label);
      break;
    case "RESOURCE_NOT_FOUND":
      return new ResourceNotFoundError(message);
    case "RESOURCE_IN_USE":
      return new ResourceInUseError(message);
    case "LOCK_NOT_FOUND":
      return new LockNotFoundError(message);
    case "LOCK_NOT_HELD":
      return new LockNotHeldError(message);
    case "STORE_UNAVAILABLE":
      return new StoreUnavailableError(message, status);
    case "UNAUTHENTICATED":
      return new UnauthenticatedError(message);
    case "PERMISSION_DENIED":
      return new PermissionDeniedError(message);
    case "RATE_LIMITED":
      return new RateLimitedError(message, retryAfterSeconds(retryAfter));
    case "LOCK_ENDED":
      if (body.lockId) return new LockEndedError(message, body.lockId);
      break;
    case "IDEMPOTENCY_KEY_REUSED":
      return new IdempotencyKeyReusedError(message);
  }
  return new TrackerApiError(message, body.code ?? "UNKNOWN", status, body.field);
}
var ServerUnreachableError = class extends TrackerApiError {
  name = "ServerUnreachableError";
  constructor(message) {
    super(message, "UNREACHABLE", 0);
  }
};
var LockLostError = class extends TrackerApiError {
  name = "LockLostError";
  constructor(message) {
    super(message, "LOCK_LOST", 0);
  }
};
function retryAfterSeconds(header) {
  if (header === void 0 || header.trim() === "") return null;
  if (/^\s*\d{1,9}\s*$/.test(header)) return Number(header);
  const at = Date.parse(header);
  return Number.isNaN(at) ? null : Math.max(0, Math.ceil((at - Date.now()) / 1e3));
}

// src/sdk/tracker-client.ts
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import { hostname, userInfo } from "node:os";

// src/duration.ts
function parseDurationSeconds(text) {
  if (/^\d{1,9}$/.test(text)) return Number(text);
  const match = /^(?:(\d{1,6})d)?(?:(\d{1,7})h)?(?:(\d{1,9})m)?(?:(\d{1,9})s)?$/.exec(text);
  if (!match || text === "") return null;
  const [, days = "0", hours = "0", minutes = "0", seconds = "0"] = match;
  return Number(days) * 86400 + Number(hours) * 3600 + Number(minutes) * 60 + Number(seconds);
}

// src/sdk/tracker-client.ts
var API = "/api/v1alpha1";
var MAX_RETRY_AFTER_SECONDS = 10;
function resolveToken(option) {
  const token = (option === void 0 ? process.env.TRACKER_TOKEN : option)?.trim() ?? "";
  if (token === "") return null;
  if (!/^[\x21-\x7e]+$/.test(token)) {
    throw new TypeError("the token must be printable ASCII without spaces (check TRACKER_TOKEN)");
  }
  return token;
}
function resolveTls(options, url) {
  const { ca, caFile, cert, certFile, key, keyFile } = options;
  if (!/^https:/i.test(url)) {
    if ([ca, caFile, cert, certFile, key, keyFile].some((option) => option !== void 0)) {
      throw new TypeError(`ca, cert and key (and their files) apply to https:// URLs only, not ${url}`);
    }
    return {};
  }
  const env = process.env;
  const pick = (value, file, variable, what) => value ?? readPem(file ?? (env[variable] || void 0), what);
  const material = {
    ca: pick(ca, caFile, "TRACKER_CA_FILE", "CA file"),
    cert: pick(cert, certFile, "TRACKER_CLIENT_CERT_FILE", "client certificate file"),
    key: pick(key, keyFile, "TRACKER_CLIENT_KEY_FILE", "client key file")
  };
  if (material.cert === void 0 !== (material.key === void 0)) {
    throw new TypeError(
      "a client certificate and its key go together: give both (cert/certFile and key/keyFile, or TRACKER_CLIENT_CERT_FILE and TRACKER_CLIENT_KEY_FILE) or neither"
    );
  }
  return Object.fromEntries(Object.entries(material).filter(([, value]) => value !== void 0));
}
function readPem(path, what) {
  if (path === void 0) return void 0;
  try {
    return readFileSync(path);
  } catch (error2) {
    throw new Error(`cannot read the ${what} ${path} (${error2.code ?? "error"})`);
  }
}
function timestamp(value, what) {
  if (typeof value === "string") return value;
  if (Number.isNaN(value.getTime())) throw new TypeError(`${what} is an invalid Date`);
  return value.toISOString();
}
function durationSeconds(value, what) {
  const seconds = typeof value === "number" ? value : parseDurationSeconds(value);
  if (seconds === null || !Number.isSafeInteger(seconds) || seconds < 0) {
    throw new TypeError(
      `${what} must be whole seconds or a duration like 90s, 30m, 1h30m; got ${String(value)}`
    );
  }
  return seconds;
}
function defaultWho() {
  let user = process.env.USER ?? "unknown";
  try {
    user = userInfo().username;
  } catch {
  }
  return `${user}@${hostname()}`;
}
var TrackerClient = class {
  url;
  #retries;
  #retryDelayMs;
  #token;
  #tls;
  /**
   * Reads the TLS files (if any) at once: throws TypeError for contradictory options, and
   * Error naming the file for one that cannot be read.
   */
  constructor(options = {}) {
    this.url = (options.url ?? "http://localhost:8080").replace(/\/+$/, "");
    this.#retries = options.retries ?? 3;
    this.#retryDelayMs = options.retryDelayMs ?? 100;
    this.#token = resolveToken(options.token);
    this.#tls = resolveTls(options, this.url);
  }
  /** Whether calls carry a bearer token. */
  get hasToken() {
    return this.#token !== null;
  }
  /**
   * Takes the lock on `service` (or, with `service` null and `label`, on any free resource
   * carrying the label), waiting in line for up to `wait`; throws LockHeldError or
   * WaitTimeoutError (with every holder), LimitMismatchError, NoSuchLabelError. Every acquire carries an Idempotency-Key of its own, so it is retried
   * safely when the connection breaks or the server answers 503 (even after the server may
   * have granted the lock): a retry gets the same lock, or takes the same place in line.
   */
  acquire(service, options = {}) {
    const body = { who: options.who ?? defaultWho() };
    if (service !== null) body.service = service;
    if (options.label !== void 0) body.label = options.label;
    if (options.limit !== void 0) body.limit = options.limit;
    if (options.mode !== void 0) body.mode = options.mode;
    Object.assign(body, commonBody(options));
    return this.#request("POST", `${API}/lock`, body, options.signal, {
      idempotencyKey: options.idempotencyKey ?? randomUUID()
    });
  }
  /**
   * Takes every claim of `locks` at once, or none (waiting for all of them together up to
   * `wait`); throws LockHeldError or WaitTimeoutError naming the holders. Retried safely like
   * `acquire`, with an Idempotency-Key of its own.
   */
  acquireGroup(options) {
    const body = {
      who: options.who ?? defaultWho(),
      locks: options.locks.map((claim) => ({ ...claim })),
      ...commonBody(options)
    };
    return this.#request("POST", `${API}/locks`, body, options.signal, {
      idempotencyKey: options.idempotencyKey ?? randomUUID()
    });
  }
  /** A group's locks that are still held; throws LockNotFoundError when none is. */
  getGroup(id, options = {}) {
    return this.#request(
      "GET",
      `${API}/locks/${encodeURIComponent(id)}`,
      void 0,
      options.signal
    );
  }
  /** Renews every held lock of a group (by `ttl`, or each one's own); LockNotHeldError when none is. */
  renewGroup(id, options = {}) {
    const body = options.ttl === void 0 ? {} : { ttlSeconds: durationSeconds(options.ttl, "ttl") };
    return this.#request(
      "POST",
      `${API}/locks/${encodeURIComponent(id)}/renew`,
      body,
      options.signal
    );
  }
  /** Releases every held lock of a group; resolves with them. LockNotFoundError when none is held. */
  releaseGroup(id, options = {}) {
    return this.#request(
      "DELETE",
      `${API}/locks/${encodeURIComponent(id)}`,
      void 0,
      options.signal
    );
  }
  /**
   * Creates or replaces the registered resource `name` (needs a lock:admin token); resolves
   * with it and whether it was created (rather than replaced).
   */
  async putResource(name, spec = {}, options = {}) {
    const body = {};
    if (spec.labels !== void 0) body.labels = [...spec.labels];
    if (spec.properties !== void 0) body.properties = { ...spec.properties };
    if (spec.capacity !== void 0) body.capacity = spec.capacity;
    if (spec.description !== void 0) body.description = spec.description;
    const { status, body: resource } = await this.#exchange(
      "PUT",
      resourcePath(name),
      body,
      options.signal
    );
    return { resource, created: status === 201 };
  }
  /** The registered resource `name`; throws ResourceNotFoundError. */
  getResource(name, options = {}) {
    return this.#request("GET", resourcePath(name), void 0, options.signal);
  }
  /** The registered resources by name; with `label`, those carrying it. */
  async listResources(options = {}) {
    const query = options.label === void 0 ? "" : `?${new URLSearchParams({ label: options.label })}`;
    const answer = await this.#request(
      "GET",
      `${API}/resources${query}`,
      void 0,
      options.signal
    );
    return answer.resources;
  }
  /** Removes a resource from the registry (lock:admin); ResourceInUseError while it is held. */
  async deleteResource(name, options = {}) {
    await this.#request("DELETE", resourcePath(name), void 0, options.signal);
  }
  get(id, options = {}) {
    return this.#request("GET", `${API}/lock/${encodeURIComponent(id)}`, void 0, options.signal);
  }
  async release(id, options = {}) {
    await this.#request(
      "DELETE",
      `${API}/lock/${encodeURIComponent(id)}`,
      void 0,
      options.signal
    );
  }
  /** Extends the lease (by `ttl`, or the lock's own TTL); throws LockNotHeldError when lost. */
  renew(id, options = {}) {
    const body = options.ttl === void 0 ? {} : { ttlSeconds: durationSeconds(options.ttl, "ttl") };
    return this.#request(
      "POST",
      `${API}/lock/${encodeURIComponent(id)}/renew`,
      body,
      options.signal
    );
  }
  /**
   * Changes the note of a held lock (null or '' clears it); throws LockNotHeldError when the
   * lock is not held, or not this caller's.
   */
  setNote(id, note, options = {}) {
    const body = { note };
    return this.#request("PATCH", `${API}/lock/${encodeURIComponent(id)}`, body, options.signal);
  }
  /**
   * Ends the lock `id` whoever holds it and takes its service for `who`, ahead of every
   * waiter (an admin's tool: needs lock:admin); `reason` is required and kept in the history
   * (`stolen`). Resolves with the new lock and the one it ended; throws LockNotFoundError
   * when no lock with that id is held. Retried like `forceRelease`, with the same cost: a
   * repeat after an attempt that did commit (a 503 after COMMIT) finds the lock gone and
   * throws LockNotFoundError although the first attempt took it (`list({ who })` says).
   */
  async steal(id, options) {
    const body = { who: options.who ?? defaultWho(), reason: options.reason };
    if (options.ttl !== void 0) body.ttlSeconds = durationSeconds(options.ttl, "ttl");
    if (options.note !== void 0) body.note = options.note;
    return this.#request(
      "POST",
      `${API}/lock/${encodeURIComponent(id)}/steal`,
      body,
      options.signal
    );
  }
  /**
   * Releases the lock whoever holds it (an operator's tool for a holder that will never come
   * back), recording `reason` in the history; the next waiter is granted the service as on a
   * release. Resolves with the lock as it was; throws LockNotFoundError when no lock with
   * that id is held.
   *
   * Retried like `release`, and for the same reason: a refused connection sent nothing, and
   * a 503 is retried although the first attempt may have committed (PostgreSQL's connection
   * breaking after COMMIT). Force release is not idempotent in effect by nature (it takes a
   * lock away from someone else), but it names the lock by id and ids are never reused (the
   * next holder, a granted waiter included, has another id), so a repeat can never release a
   * different lock or record a second event. The one cost is the answer: a retry after an
   * attempt that did commit finds no lock and throws LockNotFoundError, exactly as `release`
   * does, and the lock is gone either way, which is what the caller asked for.
   */
  async forceRelease(id, options = {}) {
    const body = options.reason === void 0 ? {} : { reason: options.reason };
    const answer = await this.#request(
      "POST",
      `${API}/lock/${encodeURIComponent(id)}/force-release`,
      body,
      options.signal
    );
    return answer.lock;
  }
  /**
   * One page of the lock history, newest first. For the next page, pass `nextBefore` as
   * `before` (with the same filters); it is null when this page was the last.
   */
  history(options = {}) {
    const query = new URLSearchParams();
    if (options.service !== void 0) query.set("service", options.service);
    if (options.who !== void 0) query.set("who", options.who);
    if (options.since !== void 0) query.set("since", timestamp(options.since, "since"));
    if (options.until !== void 0) query.set("until", timestamp(options.until, "until"));
    if (options.limit !== void 0) query.set("limit", String(options.limit));
    if (options.before !== void 0) query.set("before", String(options.before));
    const suffix = query.size > 0 ? `?${query}` : "";
    return this.#request("GET", `${API}/history${suffix}`, void 0, options.signal);
  }
  list(options = {}) {
    const query = new URLSearchParams();
    if (options.service !== void 0) query.set("service", options.service);
    if (options.who !== void 0) query.set("who", options.who);
    if (options.page !== void 0) query.set("page", String(options.page));
    if (options.perPage !== void 0) query.set("per_page", String(options.perPage));
    const suffix = query.size > 0 ? `?${query}` : "";
    return this.#request("GET", `${API}/locks/list${suffix}`, void 0, options.signal);
  }
  queue(service, options = {}) {
    return this.#request(
      "GET",
      `${API}/queue/${encodeURIComponent(service)}`,
      void 0,
      options.signal
    );
  }
  /**
   * Runs `fn` while holding the lock: renews it every third of its TTL, aborts the signal
   * given to `fn` the moment the lock is lost (renewal refused, or the lease ran out while
   * the server could not be reached), and releases it in `finally`. A lock without TTL is
   * never renewed (it cannot be lost to expiry).
   */
  async withLock(service, fn, options = {}) {
    const lock = await this.acquire(service, options);
    const what = `lock ${lock.id} on ${lock.service}`;
    return this.#holding(
      {
        what,
        ttlSeconds: lock.ttlSeconds,
        signal: options.signal,
        renew: async (signal) => {
          await this.renew(lock.id, { signal });
        },
        release: () => this.release(lock.id)
      },
      (signal) => fn(lock, signal)
    );
  }
  /**
   * `withLock` for a group: takes every claim of `options.locks` at once (`acquireGroup`),
   * runs `fn` while renewing the group every third of its shortest TTL, aborts the signal
   * given to `fn` the moment any of its locks is lost, and releases the group in `finally`.
   */
  async withLocks(options, fn) {
    const group = await this.acquireGroup(options);
    const ttls = group.locks.flatMap((lock) => lock.ttlSeconds === null ? [] : [lock.ttlSeconds]);
    return this.#holding(
      {
        what: `group ${group.id}`,
        ttlSeconds: ttls.length === 0 ? null : Math.min(...ttls),
        signal: options.signal,
        renew: async (signal) => {
          const renewed = await this.renewGroup(group.id, { signal });
          if (renewed.locks.length < group.locks.length) {
            throw new LockNotHeldError(
              `${group.locks.length - renewed.locks.length} of its ${group.locks.length} locks ended`
            );
          }
        },
        release: async () => {
          await this.releaseGroup(group.id);
        }
      },
      (signal) => fn(group, signal)
    );
  }
  /**
   * Runs `fn` while holding what `held` names: renews it every third of its TTL, aborts the
   * signal given to `fn` the moment it is lost (renewal refused, or the lease ran out while
   * the server could not be reached), and releases it in `finally`. Nothing without a TTL is
   * renewed (it cannot be lost to expiry).
   */
  async #holding(held, fn) {
    const lost = new AbortController();
    const signal = held.signal ? AbortSignal.any([held.signal, lost.signal]) : lost.signal;
    let timer;
    let done = false;
    if (held.ttlSeconds !== null) {
      const ttlMs = held.ttlSeconds * 1e3;
      let leaseEnds = Date.now() + ttlMs;
      const renewSoon = () => {
        timer = setTimeout(renew, Math.max(ttlMs / 3, 100));
      };
      const renew = async () => {
        try {
          await held.renew(lost.signal);
          leaseEnds = Date.now() + ttlMs;
        } catch (error2) {
          if (done) return;
          if (error2 instanceof LockNotHeldError) {
            lost.abort(new LockLostError(`${held.what} was lost: ${error2.message}`));
            return;
          }
          if (Date.now() >= leaseEnds) {
            lost.abort(new LockLostError(`${held.what}: lease ran out while renewals failed`));
            return;
          }
        }
        if (!done) renewSoon();
      };
      renewSoon();
    }
    try {
      return await fn(signal);
    } finally {
      done = true;
      clearTimeout(timer);
      if (!lost.signal.aborted) {
        await held.release().catch((error2) => {
          if (!(error2 instanceof LockNotFoundError)) throw error2;
        });
      }
    }
  }
  async #request(method, path, body, signal, options = {}) {
    return (await this.#exchange(method, path, body, signal, options)).body;
  }
  /** One call, retried as safe; the success status and body, or the typed error. */
  async #exchange(method, path, body, signal, options = {}) {
    const request = {
      method,
      body,
      signal,
      token: this.#token,
      tls: this.#tls,
      idempotencyKey: options.idempotencyKey
    };
    for (let attempt = 0; ; attempt++) {
      let response;
      try {
        response = await send(new URL(`${this.url}${path}`), request);
      } catch (error3) {
        if (signal?.aborted) throw error3;
        if ((refused(error3) || options.idempotencyKey !== void 0) && attempt < this.#retries) {
          await this.#backoff(attempt, signal);
          continue;
        }
        throw new ServerUnreachableError(`cannot reach Tracker at ${this.url}: ${describe(error3, this.url)}`);
      }
      const json = response.text === "" ? {} : JSON.parse(response.text);
      if (response.status >= 200 && response.status < 300)
        return { status: response.status, body: json };
      const error2 = errorFromResponse(response.status, json, response.retryAfter);
      if (error2 instanceof StoreUnavailableError && attempt < this.#retries) {
        await this.#backoff(attempt, signal);
        continue;
      }
      if (error2 instanceof RateLimitedError && attempt < this.#retries && error2.retryAfterSeconds !== null && error2.retryAfterSeconds <= MAX_RETRY_AFTER_SECONDS) {
        await sleep(error2.retryAfterSeconds * 1e3 + Math.random() * this.#retryDelayMs, signal);
        continue;
      }
      throw error2;
    }
  }
  #backoff(attempt, signal) {
    return sleep(this.#retryDelayMs * 2 ** attempt * (0.5 + Math.random() / 2), signal);
  }
};
function commonBody(options) {
  const body = {};
  if (options.ttl !== void 0) body.ttlSeconds = durationSeconds(options.ttl, "ttl");
  if (options.wait !== void 0) body.waitSeconds = durationSeconds(options.wait, "wait");
  if (options.priority !== void 0) body.priority = options.priority;
  if (options.note !== void 0) body.note = options.note;
  if (options.link !== void 0) body.link = options.link;
  return body;
}
function resourcePath(name) {
  return `${API}/resources/${encodeURIComponent(name)}`;
}
function sleep(ms, signal) {
  if (signal?.aborted) return Promise.reject(signal.reason);
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
function send(url, options) {
  const { method, body, signal, token, tls, idempotencyKey } = options;
  const payload = body === void 0 ? void 0 : JSON.stringify(body);
  const transport = url.protocol === "https:" ? https : http;
  const headers = payload === void 0 ? {} : { "content-type": "application/json", "content-length": Buffer.byteLength(payload) };
  if (token !== null) headers.authorization = `Bearer ${token}`;
  if (idempotencyKey !== void 0) headers["idempotency-key"] = idempotencyKey;
  const secure = url.protocol === "https:" ? tls : {};
  return new Promise((resolve, reject) => {
    const request = transport.request(url, { method, signal, headers, ...secure }, (response) => {
      const chunks = [];
      response.on("data", (chunk) => chunks.push(chunk));
      response.on(
        "end",
        () => resolve({
          status: response.statusCode ?? 0,
          text: Buffer.concat(chunks).toString("utf8"),
          retryAfter: response.headers["retry-after"]
        })
      );
      response.on("error", reject);
    });
    request.on("error", reject);
    request.end(payload);
  });
}
function refused(error2) {
  return error2.code === "ECONNREFUSED";
}
var UNTRUSTED = /* @__PURE__ */ new Set([
  "SELF_SIGNED_CERT_IN_CHAIN",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "CERT_UNTRUSTED",
  "CERT_SIGNATURE_FAILURE"
]);
function describe(error2, url) {
  const { code, message } = error2;
  if (code !== void 0 && UNTRUSTED.has(code)) {
    return `the server's TLS certificate is not trusted (${code}): give the CA certificate that signed it (TRACKER_CA_FILE)`;
  }
  if (code === "ERR_TLS_CERT_ALTNAME_INVALID") {
    return `the server's TLS certificate is not for this host name or address (${code})`;
  }
  if (code === "CERT_HAS_EXPIRED" || code === "CERT_NOT_YET_VALID") {
    return `the server's TLS certificate is not valid now (${code})`;
  }
  if (code !== void 0 && /CERTIFICATE_REQUIRED|BAD_CERTIFICATE|UNKNOWN_CA|CERTIFICATE_UNKNOWN/.test(code)) {
    return `the server refused the TLS connection (${code}): it requires a client certificate signed by its CA (TRACKER_CLIENT_CERT_FILE and TRACKER_CLIENT_KEY_FILE)`;
  }
  if (code === "EPROTO" && /wrong version number|packet length too long/i.test(message ?? "")) {
    return `no TLS at the other end (${code}): is the server serving http:// rather than https://?`;
  }
  if (code === "ECONNRESET" && /^http:/i.test(url)) {
    return `${code} (if the server serves HTTPS, use an https:// URL)`;
  }
  return code ?? message ?? String(error2);
}

// action/src/failure-message.ts
function holders(locks) {
  return locks.map((lock) => {
    const about = [lock.note, lock.link].filter((part) => part !== null).join(" ");
    return `${lock.who} (${lock.service} since ${lock.createdAt}, lock ${lock.id})${about === "" ? "" : `: ${about}`}`;
  }).join("; ");
}
function failureMessage(request, failure) {
  if (failure instanceof WaitTimeoutError) {
    return `Tracker: waited ${request.wait} for ${request.what}; still held by ${holders(failure.holders)}`;
  }
  if (failure instanceof LockHeldError) {
    return `Tracker: ${request.what} is held by ${holders(failure.holders)} (not waiting: wait is ${request.wait})`;
  }
  if (failure instanceof TrackerApiError) {
    return `Tracker: could not lock ${request.what}: ${failure.message} (${failure.code})`;
  }
  return `Tracker: could not lock ${request.what}: ${failure.message ?? String(failure)}`;
}

// action/src/heartbeat-target.ts
var HEARTBEAT_ENV = "TRACKER_ACTION_HEARTBEAT";

// action/src/workflow-commands.ts
import { randomUUID as randomUUID2 } from "node:crypto";
import { appendFileSync } from "node:fs";
function input(name, env = process.env) {
  return (env[`INPUT_${name.replace(/ /g, "_").toUpperCase()}`] ?? "").trim();
}
function escapeData(text) {
  return text.replace(/%/g, "%25").replace(/\r/g, "%0D").replace(/\n/g, "%0A");
}
function error(message) {
  process.stdout.write(`::error::${escapeData(message)}
`);
}
function runStep(step) {
  step().then(
    (code) => {
      process.exitCode = code;
    },
    (failure) => {
      error(`Tracker: unexpected error: ${failure.message ?? String(failure)}`);
      process.exitCode = 1;
    }
  );
}
function info(message) {
  process.stdout.write(`${message}
`);
}
function appendFileCommand(command, name, value, env = process.env) {
  const file = env[command];
  if (!file) throw new Error(`${command} is not set: this runs as a step of a GitHub Actions job`);
  const delimiter = `ghadelimiter_${randomUUID2()}`;
  if (name.includes(delimiter) || value.includes(delimiter) || /[\r\n=]/.test(name) || name === "") {
    throw new Error(`cannot write ${JSON.stringify(name)} to ${command}`);
  }
  appendFileSync(file, `${name}<<${delimiter}
${value}
${delimiter}
`);
}
function saveState(key, value, env = process.env) {
  const file = env.GITHUB_STATE;
  if (!file) throw new Error("GITHUB_STATE is not set: this runs as a step of a GitHub Actions job");
  if (!/^[A-Za-z0-9_]+$/.test(key) || /[\r\n]/.test(value)) {
    throw new Error(`cannot save ${JSON.stringify(key)} as one state line`);
  }
  appendFileSync(file, `${key}=${value}
`);
}

// action/src/lock-request.ts
var DEFAULT_TTL = "10m";
var DEFAULT_WAIT = "30m";
var MAX_NAME_LENGTH = 256;
var InputError = class extends Error {
  name = "InputError";
};
function clientFromInputs(env = process.env) {
  const url = input("url", env);
  if (url === "")
    throw new InputError("the input url is required (the Tracker server, e.g. https://tracker.example.com)");
  const token = input("token", env);
  return new TrackerClient({ url, token: token === "" ? void 0 : token });
}
function defaultWho2(env = process.env) {
  const { GITHUB_REPOSITORY, GITHUB_WORKFLOW, GITHUB_RUN_ID, GITHUB_RUN_ATTEMPT, GITHUB_JOB } = env;
  if (!GITHUB_REPOSITORY || !GITHUB_RUN_ID) return void 0;
  const who = `${GITHUB_REPOSITORY}/${GITHUB_WORKFLOW ?? ""}#${GITHUB_RUN_ID}.${GITHUB_RUN_ATTEMPT || "1"}/${GITHUB_JOB ?? ""}`;
  return [...who].slice(0, MAX_NAME_LENGTH).join("");
}
function runUrl(env = process.env) {
  const { GITHUB_SERVER_URL, GITHUB_REPOSITORY, GITHUB_RUN_ID, GITHUB_RUN_ATTEMPT } = env;
  if (!GITHUB_REPOSITORY || !GITHUB_RUN_ID || !/^https?:\/\//.test(GITHUB_SERVER_URL ?? "")) return null;
  return `${GITHUB_SERVER_URL}/${GITHUB_REPOSITORY}/actions/runs/${GITHUB_RUN_ID}/attempts/${GITHUB_RUN_ATTEMPT || "1"}`;
}
function integer(name, min, max, env) {
  const text = input(name, env);
  if (text === "") return void 0;
  const value = /^-?\d{1,9}$/.test(text) ? Number(text) : Number.NaN;
  if (!(value >= min && value <= max)) {
    throw new InputError(`the input ${name} must be a whole number from ${min} to ${max}; got "${text}"`);
  }
  return value;
}
function duration(name, fallback, env) {
  const text = input(name, env) || fallback;
  try {
    durationSeconds(text, name);
  } catch {
    throw new InputError(
      `the input ${name} must be whole seconds or a duration like 90s, 30m, 1h30m; got "${text}"`
    );
  }
  return text;
}
function lockRequest(env = process.env) {
  const service = input("service", env);
  const services = input("services", env).split(/\r?\n/).map((line) => line.trim()).filter((line) => line !== "");
  const label = input("label", env);
  if (service !== "" && services.length > 0) {
    throw new InputError("give service (one lock) or services (a group), not both");
  }
  if (service === "" && services.length === 0 && label === "") {
    throw new InputError("give service, services or label: what to lock");
  }
  if (service !== "" && label !== "") {
    throw new InputError("service and label together are a group: list the services in services, with label");
  }
  const quantity = integer("quantity", 1, 32, env);
  if (quantity !== void 0 && label === "") throw new InputError("the input quantity goes with label");
  const mode = input("mode", env);
  if (mode !== "" && mode !== "exclusive" && mode !== "shared") {
    throw new InputError(`the input mode must be exclusive or shared; got "${mode}"`);
  }
  const lockMode = mode === "" ? void 0 : mode;
  const limit = integer("limit", 1, 1e3, env);
  if (limit !== void 0 && mode === "shared") {
    throw new InputError("the input limit applies to exclusive locks: not with mode shared");
  }
  if (limit !== void 0 && service === "" && services.length === 0) {
    throw new InputError("the input limit applies to services: a resource's capacity is its limit");
  }
  const named = service === "" ? services : [service];
  const claims = [
    ...named.map((name) => ({ service: name, mode: lockMode, limit })),
    ...label === "" ? [] : [{ label, mode: lockMode, quantity }]
  ];
  const wait = duration("wait", DEFAULT_WAIT, env);
  const options = {
    who: input("who", env) || defaultWho2(env),
    ttl: duration("ttl", DEFAULT_TTL, env),
    wait,
    priority: integer("priority", -1e3, 1e3, env),
    ...input("note", env) === "" ? {} : { note: input("note", env) },
    ...runUrl(env) === null ? {} : { link: runUrl(env) }
  };
  const labelled = label === "" ? [] : [`${quantity ?? 1} of label ${label}`];
  return {
    what: [...named, ...labelled].join(", "),
    group: services.length > 0 || (quantity ?? 1) > 1,
    claims,
    options,
    wait
  };
}

// action/src/main.ts
async function take(client, request, signal) {
  const [claim] = request.claims;
  if (!request.group && claim !== void 0) {
    const lock = await client.acquire(claim.service ?? null, {
      ...request.options,
      label: claim.label,
      limit: claim.limit,
      mode: claim.mode,
      signal
    });
    return { kind: "lock", id: lock.id, locks: [lock], env: lockEnv(lock) };
  }
  const group = await client.acquireGroup({ ...request.options, locks: request.claims, signal });
  return { kind: "group", id: group.id, locks: group.locks, env: groupEnv(group) };
}
function startHeartbeat(target) {
  const folder = join(process.env.RUNNER_TEMP || tmpdir(), "tracker-action");
  mkdirSync(folder, { recursive: true });
  const log = join(folder, `heartbeat-${target.id}.log`);
  const fd = openSync(log, "a");
  try {
    const child = spawn(process.execPath, [join(dirname(fileURLToPath(import.meta.url)), "heartbeat.js")], {
      detached: true,
      windowsHide: true,
      stdio: ["ignore", fd, fd],
      env: { ...process.env, [HEARTBEAT_ENV]: JSON.stringify(target) }
    });
    if (child.pid === void 0) throw new Error(`could not start the heartbeat (see ${log})`);
    child.unref();
    return { pid: child.pid, log };
  } finally {
    closeSync(fd);
  }
}
async function main() {
  const cancel = new AbortController();
  const onSignal = (signal) => cancel.abort(new Error(`cancelled (${signal})`));
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  let request;
  let client;
  try {
    request = lockRequest();
    client = clientFromInputs();
  } catch (failure) {
    error(`Tracker: ${failure.message}`);
    return 1;
  }
  info(
    `Tracker: asking ${client.url} for ${request.what} as ${request.options.who ?? "this runner"} (waiting up to ${request.wait})`
  );
  let granted;
  try {
    granted = await take(client, request, cancel.signal);
  } catch (failure) {
    if (cancel.signal.aborted) {
      info(
        `Tracker: ${cancel.signal.reason.message} while waiting for ${request.what}: left the queue`
      );
      return 1;
    }
    error(failureMessage(request, failure));
    return 1;
  }
  try {
    saveState("kind", granted.kind);
    saveState("lock_id", granted.id);
  } catch (failure) {
    await release(client, granted);
    error(`Tracker: ${failure.message}; released ${request.what}`);
    return 1;
  }
  const ttls = granted.locks.flatMap((lock) => lock.ttlSeconds === null ? [] : [lock.ttlSeconds]);
  const ttlSeconds = ttls.length === 0 ? null : Math.min(...ttls);
  let renewing = "no TTL: nothing to renew";
  if (ttlSeconds !== null) {
    const heartbeat = startHeartbeat({
      kind: granted.kind,
      id: granted.id,
      ttlSeconds,
      size: granted.locks.length
    });
    saveState("heartbeat_pid", String(heartbeat.pid));
    renewing = `renewed every ${Math.round(ttlSeconds / 3)}s by process ${heartbeat.pid} (log: ${heartbeat.log})`;
  }
  appendFileCommand("GITHUB_OUTPUT", "lock-id", granted.id);
  appendFileCommand(
    "GITHUB_OUTPUT",
    "fencing-token",
    granted.locks.map((lock) => lock.fencingToken).join(",")
  );
  appendFileCommand("GITHUB_OUTPUT", "resources", granted.locks.map((lock) => lock.service).join(","));
  for (const [name, value] of Object.entries(granted.env)) appendFileCommand("GITHUB_ENV", name, value);
  const held = granted.locks.map((lock) => `${lock.service} (fencing token ${lock.fencingToken})`).join(", ");
  info(`Tracker: ${granted.kind} ${granted.id} holds ${held}; ${renewing}`);
  if (cancel.signal.aborted) info("Tracker: cancelled after the grant: the post step releases it");
  return 0;
}
async function release(client, granted) {
  try {
    if (granted.kind === "lock") await client.release(granted.id);
    else await client.releaseGroup(granted.id);
  } catch {
  }
}
runStep(main);
