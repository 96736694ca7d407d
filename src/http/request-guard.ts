import { isIP } from 'node:net';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { HttpRefusal } from './error-mapping.js';
import { API, routeOf } from './lock-routes.js';

/**
 * What keeps a web page from using Tracker through its visitor's browser, which can reach a
 * server on loopback or on the office network that the page's own author cannot:
 *
 * - **DNS rebinding.** A page of `evil.example` whose name is then made to resolve to this
 *   server's address talks to it as if it were its own origin, reading and changing locks.
 *   Its requests still say `Host: evil.example`: only Host names this server answers to pass
 *   (HostCheck), everything else is `403 HOST_NOT_ALLOWED`.
 * - **Cross-site requests.** A page may make the browser send simple requests anywhere
 *   (`<img src>`, a form, `fetch` with `mode: 'no-cors'`), without reading the answer; with
 *   authentication off (the default) nothing else would stop those that change locks.
 *   Browsers say where a request comes from (`Sec-Fetch-Site`, `Origin`, `Referer`): a
 *   change from anywhere but this server's own pages is `403 CROSS_SITE_REQUEST`. curl, the
 *   SDK and the CLI send none of these headers, so they are never refused for it.
 */

/** The Host names REST answers to. */
export interface HostCheck {
  /** Whether a request with this `Host` header may be served (no header: HTTP/1.0, not a browser). */
  allows(host: string | undefined): boolean;
  /**
   * Whether a page of `origin` (an `Origin` header, or the origin of a `Referer`) is this
   * server's own, reached as `host`: the same name and port, or a name given with
   * --allowed-host (a proxy in front that sends another Host).
   */
  isOwnOrigin(origin: string, host: string | undefined): boolean;
  /** The names answered to besides IP addresses, for the start log; null: any. */
  readonly names: readonly string[] | null;
}

export interface HostCheckOptions {
  /** The address REST listens on (--host). */
  readonly listenHost: string;
  /** --allowed-host: names, `.example.com` for a domain and its subdomains; null: any (`*`). */
  readonly allowedHosts: readonly string[] | null;
  /** This machine's host name (os.hostname()), answered to when listening beyond loopback. */
  readonly machineHostname: string;
}

/**
 * The rule: any IP address (a page cannot rebind an address, only a name), `localhost`, the
 * name REST listens on, the --allowed-host names, and, when listening beyond loopback, this
 * machine's host name (with and without its domain). The port is not compared: a name that
 * reaches this server does so on whatever port it was published on.
 */
export function createHostCheck({ listenHost, allowedHosts, machineHostname }: HostCheckOptions): HostCheck {
  if (allowedHosts === null) {
    return { allows: () => true, isOwnOrigin: sameHostAndPort, names: null };
  }
  const exact = new Set(['localhost']);
  const listen = normalizeHostname(listenHost);
  if (isIP(listen) === 0) exact.add(listen);
  if (!isLoopback(listenHost) && machineHostname !== '') {
    const machine = normalizeHostname(machineHostname);
    exact.add(machine);
    exact.add(machine.split('.')[0] ?? machine);
  }
  const given = allowedHosts.map(normalizeHostname);
  for (const name of given) if (!name.startsWith('.')) exact.add(name);
  const domains = given.filter((name) => name.startsWith('.'));
  const named = (name: string) =>
    exact.has(name) || domains.some((domain) => name === domain.slice(1) || name.endsWith(domain));
  const explicitlyAllowed = (name: string) =>
    given.includes(name) || domains.some((domain) => name === domain.slice(1) || name.endsWith(domain));
  return {
    allows(host) {
      if (host === undefined) return true;
      const name = hostnameOf(host);
      return name !== null && (isIpLiteral(name) || named(name));
    },
    isOwnOrigin(origin, host) {
      if (sameHostAndPort(origin, host)) return true;
      const hostname = originUrl(origin)?.hostname;
      return hostname !== undefined && explicitlyAllowed(normalizeHostname(hostname));
    },
    names: [...exact, ...domains],
  };
}

/** Whether `origin` names the very host and port of the `Host` header (its scheme's default port when it has none). */
function sameHostAndPort(origin: string, host: string | undefined): boolean {
  const url = originUrl(origin);
  if (url === undefined || host === undefined) return false;
  const defaultPort = url.protocol === 'https:' ? '443' : '80';
  const match = /^(.*?)(?::(\d{1,5}))?$/.exec(host.trim());
  const hostname = normalizeHostname(match?.[1] ?? '');
  return (
    hostname === normalizeHostname(url.hostname) && (match?.[2] ?? defaultPort) === (url.port || defaultPort)
  );
}

/** An `Origin` value as a URL: only http(s) origins of a host; `null` (opaque) and anything else: undefined. */
function originUrl(origin: string): URL | undefined {
  try {
    const url = new URL(origin);
    return (url.protocol === 'http:' || url.protocol === 'https:') && url.hostname !== '' ? url : undefined;
  } catch {
    return undefined;
  }
}

/** `Tracker.Example.` → `tracker.example`; `[::1]` stays bracketed, as in a Host header. */
function normalizeHostname(name: string): string {
  return name.trim().toLowerCase().replace(/\.$/, '');
}

/** The name of a `Host` header (`name`, `name:port`, `[v6]:port`), or null when it is none. */
function hostnameOf(host: string): string | null {
  const match = /^(\[[0-9a-fA-F:.]+\]|[^:[\]/\s@]+)(?::\d{1,5})?$/.exec(host.trim());
  return match?.[1] === undefined ? null : normalizeHostname(match[1]);
}

function isIpLiteral(name: string): boolean {
  return name.startsWith('[') ? isIP(name.slice(1, -1)) === 6 : isIP(name) === 4;
}

/** Whether REST listens on loopback only (--host 127.0.0.1, ::1 or localhost). */
export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || host.startsWith('127.');
}

/**
 * Whether a request changes something: every method but GET, HEAD and OPTIONS, and the
 * guide's `GET /unlock/{id}` (and its automatic HEAD twin, which runs the same handler).
 */
function changes(request: FastifyRequest, route: string): boolean {
  if (route === `${API}/unlock/:id`) return true;
  return !['GET', 'HEAD', 'OPTIONS'].includes(request.method);
}

const single = (value: string | string[] | undefined) => (Array.isArray(value) ? value[0] : value);

/** Where the page that sent the request comes from: `Origin`, else the origin of `Referer`. */
function pageOrigin(request: FastifyRequest): string | undefined {
  const origin = single(request.headers.origin);
  if (origin !== undefined) return origin;
  const referer = single(request.headers.referer);
  if (referer === undefined) return undefined;
  try {
    return new URL(referer).origin;
  } catch {
    return undefined;
  }
}

/**
 * Whether a POST says by a header that no HTML form, `<img>` or `no-cors` fetch can send
 * that it is not one: a JSON content type, `Authorization`, or `X-Tracker` (any value). A
 * browser sends those only after a CORS preflight, which this server never grants.
 */
function declaresItself(request: FastifyRequest): boolean {
  const type = single(request.headers['content-type'])?.split(';')[0]?.trim().toLowerCase();
  return (
    type === 'application/json' ||
    request.headers.authorization !== undefined ||
    (single(request.headers['x-tracker']) ?? '') !== ''
  );
}

function hasBody(request: FastifyRequest): boolean {
  const length = single(request.headers['content-length']);
  return request.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
}

/**
 * Registers the checks on every request, before authentication: the Host (every route but
 * the health checks, which load balancers and probes call by whatever name or address they
 * have), then, for a change, where it comes from.
 */
export function registerRequestGuard(app: FastifyInstance, hosts: HostCheck): void {
  // Callback form: no promise per request. A refusal is thrown, answered as a rejection is.
  app.addHook('onRequest', (request, _reply, done) => {
    const route = routeOf(request);
    if (route === '/healthz' || route === '/readyz') return done();
    const host = single(request.headers.host);
    if (!hosts.allows(host)) {
      throw new HttpRefusal(
        'HOST_NOT_ALLOWED',
        `this server does not answer to the host name in the Host header (${JSON.stringify(host)}); ` +
          'start it with --allowed-host NAME for each name clients use',
      );
    }
    if (route === undefined || !changes(request, route)) return done();
    const site = single(request.headers['sec-fetch-site']);
    if (site === 'cross-site' || site === 'same-site') {
      throw new HttpRefusal(
        'CROSS_SITE_REQUEST',
        `a request from a page of another site (Sec-Fetch-Site: ${site}) may not change locks`,
      );
    }
    const origin = pageOrigin(request);
    if (origin !== undefined && !hosts.isOwnOrigin(origin, host)) {
      throw new HttpRefusal(
        'CROSS_SITE_REQUEST',
        `a request from a page of another origin (${JSON.stringify(origin)}) may not change locks`,
      );
    }
    // A browser that said where the request comes from (this server's own page, checked
    // above) needs no more; one that said nothing may be too old to send Origin.
    const vouched = site === 'same-origin' || origin !== undefined;
    if (request.method === 'POST' && !hasBody(request) && !declaresItself(request) && !vouched) {
      throw new HttpRefusal(
        'CROSS_SITE_REQUEST',
        'a POST without a body must carry Content-Type: application/json (or an Authorization or ' +
          'X-Tracker header), which no HTML form or cross-site page can send',
      );
    }
    done();
  });
}
