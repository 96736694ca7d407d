// The gRPC ceiling for `npm run bench`: a bare grpc-js server (no storage, no logging, no
// interceptors) that serves Tracker's own lock.proto and answers the two unary calls the
// bench makes, CreateLock and UnLock, with the same messages Tracker sends (a Lock with every
// field set the way Tracker sets it for a plain acquire, and UnLockResponse). Whatever
// Tracker does on top of grpc-js (validation, the store, logging, metrics) is what the
// bench's "gRPC ÷ grpc-js" ratio measures.
//
//   node bench/grpc-ceiling-server.mjs [--host 127.0.0.1] [--port 0]
//
// Prints one JSON line {"msg":"grpc ceiling listening","grpcPort":N} once it listens;
// stops on SIGTERM or SIGINT.
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';

const { values } = parseArgs({
  options: {
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string', default: '0' },
  },
});

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const PROTO_FILE = path.join(ROOT, 'proto', 'tracker', 'lock', 'v1alpha1', 'lock.proto');
// The options Tracker's server loads the proto with (src/grpc/server.ts).
const definition = loadSync(PROTO_FILE, { longs: String, enums: String, defaults: true, keepCase: false });
const loaded = grpc.loadPackageDefinition(definition);
const LockService = loaded.tracker.lock.v1alpha1.LockService;

const RELEASED = { success: true, message: 'Lock released successfully' };

/** @param {string} message */
function invalid(message) {
  return { code: grpc.status.INVALID_ARGUMENT, details: message };
}

const server = new grpc.Server();
server.addService(LockService.service, {
  CreateLock(call, callback) {
    const { service, who } = call.request;
    if (typeof service !== 'string' || service === '' || typeof who !== 'string' || who === '') {
      callback(invalid('service and who are required'));
      return;
    }
    callback(null, {
      id: randomUUID(),
      service,
      who,
      createdAt: `${new Date().toISOString().slice(0, 19)}Z`,
      ttlSeconds: 0,
      expiresAt: '',
      fencingToken: '1',
      waiters: 0,
      owner: '',
      limit: 1,
      mode: 'exclusive',
      groupId: '',
    });
  },
  UnLock(call, callback) {
    if (typeof call.request.id !== 'string' || call.request.id === '') {
      callback(invalid('id is required'));
      return;
    }
    callback(null, RELEASED);
  },
});

server.bindAsync(
  `${values.host}:${values.port}`,
  grpc.ServerCredentials.createInsecure(),
  (err, grpcPort) => {
    if (err) {
      process.stderr.write(`grpc ceiling: ${err.message}\n`);
      process.exit(1);
    }
    process.stdout.write(`${JSON.stringify({ msg: 'grpc ceiling listening', grpcPort })}\n`);
  },
);

function shutdown() {
  server.tryShutdown(() => process.exit(0));
  setTimeout(() => server.forceShutdown(), 2_000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
