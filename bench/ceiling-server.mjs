// The ceiling for `npm run bench`: a bare node:http server (no framework, no storage, no
// logging) that answers the lock REST calls the way Tracker does: `POST /lock` with the same
// 201 body (every field of Tracker's lock), and the release routes (`DELETE /lock/{id}`, the
// guide's `GET /unlock/{id}` and `POST /unlock/{id}`) with the same 200 body. Whatever Tracker does on
// top of this (routing, validation, SQLite, logging) is what the bench's "vs ceiling"
// column measures.
//
//   node bench/ceiling-server.mjs [--host 127.0.0.1] [--port 0]
//
// Prints one JSON line {"msg":"ceiling listening","httpPort":N} once it listens; stops on
// SIGTERM or SIGINT.
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string', default: '0' },
  },
});

const PREFIX = '/api/v1alpha1/lock';
const UNLOCK = '/api/v1alpha1/unlock/';
const RELEASED = JSON.stringify({ success: true, message: 'Lock released successfully' });

/**
 * @param {http.ServerResponse} res
 * @param {number} status
 * @param {string} body
 */
function send(res, status, body) {
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(body),
  });
  res.end(body);
}

/** @param {string} message */
function badRequest(message) {
  return JSON.stringify({ error: 'Bad Request', message });
}

const server = http.createServer((req, res) => {
  const url = req.url ?? '';
  if (req.method === 'POST' && url === PREFIX) {
    /** @type {Buffer[]} */
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', () => {
      let body;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      } catch {
        send(res, 400, badRequest('body is not valid JSON'));
        return;
      }
      if (typeof body?.service !== 'string' || typeof body?.who !== 'string') {
        send(res, 400, badRequest('service and who must be strings'));
        return;
      }
      const createdAt = `${new Date().toISOString().slice(0, 19)}Z`;
      const lock = {
        id: randomUUID(),
        service: body.service,
        who: body.who,
        createdAt,
        ttlSeconds: null,
        expiresAt: null,
        fencingToken: 1,
        waiters: 0,
        owner: null,
        limit: 1,
        mode: 'exclusive',
        groupId: null,
        resource: null,
      };
      send(res, 201, JSON.stringify(lock));
    });
    return;
  }
  req.resume();
  if (req.method === 'DELETE' && url.startsWith(`${PREFIX}/`) && url.length > PREFIX.length + 1) {
    send(res, 200, RELEASED);
    return;
  }
  if (
    (req.method === 'GET' || req.method === 'POST') &&
    url.startsWith(UNLOCK) &&
    url.length > UNLOCK.length
  ) {
    send(res, 200, RELEASED);
    return;
  }
  send(res, 404, JSON.stringify({ error: 'Not Found', message: `no route ${req.method} ${url}` }));
});

server.listen(Number(values.port), values.host, () => {
  const address = server.address();
  const httpPort = typeof address === 'object' && address !== null ? address.port : 0;
  process.stdout.write(`${JSON.stringify({ msg: 'ceiling listening', httpPort })}\n`);
});

function shutdown() {
  server.close(() => process.exit(0));
  server.closeAllConnections();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
