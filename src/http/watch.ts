import type { ServerResponse } from 'node:http';
import type { JsonSchemaToTsProvider } from '@fastify/type-provider-json-schema-to-ts';
import type { FastifyInstance } from 'fastify';
import type { TrackerError } from '../core/errors.js';
import type { FeedMessage } from '../core/event-feed.js';
import type { LockService } from '../core/lock-service.js';
import { toHttpError } from './error-mapping.js';
import { API, callerOf } from './lock-routes.js';
import { eventToJson, lockToJson } from './present.js';
import { apiRoute } from './route-docs.js';
import { type SnapshotJson, WatchHeaders, WatchQuery } from './schemas.js';

/** A comment line every so often keeps proxies and load balancers from closing an idle stream. */
const KEEP_ALIVE_MS = 15_000;
/**
 * A watcher that reads slower than changes happen is cut off once this much is waiting in
 * its socket's buffer; its client reconnects with Last-Event-ID and resumes where it was.
 */
const MAX_BUFFERED_BYTES = 8 * 1024 * 1024;

/** One Server-Sent Events message. `data` is one line of JSON (JSON never holds a raw newline). */
export function formatSse(message: FeedMessage): string {
  if (message.kind === 'snapshot') {
    const data: SnapshotJson = { eventId: message.eventId, locks: message.locks.map(lockToJson) };
    return `id: ${message.eventId}\nevent: snapshot\ndata: ${JSON.stringify(data)}\n\n`;
  }
  const { event } = message;
  return `id: ${event.id}\nevent: ${event.type}\ndata: ${JSON.stringify(eventToJson(event))}\n\n`;
}

/**
 * The last message of a stream the service ended (its token revoked or narrowed): `event:
 * error` and the error body of the status the same refusal would get (`code` UNAUTHENTICATED
 * or PERMISSION_DENIED). No `id`: a client that reconnects resumes where it was, if still allowed.
 */
export function formatSseError(reason: TrackerError): string {
  return `event: error\ndata: ${JSON.stringify(toHttpError(reason).body)}\n\n`;
}

/**
 * GET /api/v1alpha1/watch: the held locks, then every change, as Server-Sent Events. The
 * stream resumes after the Last-Event-ID header (or `lastEventId`). Streams end when the
 * server stops (clients reconnect and resume), and with an `event: error` message when the
 * stream's token is revoked or may no longer watch this.
 */
export function registerWatch(root: FastifyInstance, service: LockService): void {
  const app = root.withTypeProvider<JsonSchemaToTsProvider>();
  const path = `${API}/watch`;
  const streams = new Set<ServerResponse>();
  app.addHook('preClose', async () => {
    for (const stream of streams) stream.end();
  });

  app.get(
    path,
    {
      schema: apiRoute(
        { method: 'GET', gated: true, api: true },
        {
          operationId: 'watchLocks',
          summary: 'Watch lock events (Server-Sent Events)',
          description:
            'A `text/event-stream`: first an `event: snapshot` message with every held lock ' +
            '(`{"eventId", "locks"}`), then one message per lock event as it happens (`event:` its type, ' +
            '`data:` the event as in GET /history), optionally for one `service`. Each message carries ' +
            'an `id`; a client that reconnects with `Last-Event-ID` (or `lastEventId`) gets exactly the ' +
            'events after it, or a fresh snapshot when they are no longer all kept. Events right after a ' +
            'snapshot may repeat changes it shows: apply them as upserts and deletes by lock id. A stream ' +
            'whose token is revoked, or may no longer watch this, ends with an `event: error` message ' +
            '(`data:` the error body, `code` UNAUTHENTICATED or PERMISSION_DENIED).',
          tags: ['history'],
        },
        {
          querystring: WatchQuery,
          headers: WatchHeaders,
          response: {
            200: {
              description: 'An endless stream of Server-Sent Events; each `data:` line is one JSON event.',
              content: { 'text/event-stream': { schema: { type: 'string' } } },
            },
          },
        },
      ),
    },
    async (request, reply) => {
      const header = request.headers['last-event-id'];
      const lastEventId = typeof header === 'string' && header !== '' ? header : request.query.lastEventId;
      // Until the watcher is live (its snapshot read), messages wait here: a store that
      // cannot be read still gets an ordinary JSON 503, not a broken stream.
      const raw = reply.raw;
      const pending: string[] = [];
      let open = false;
      /** Why the service ended the stream (its token revoked or narrowed); null while it runs. */
      let ended: TrackerError | null = null;
      const finish = () => {
        if (!raw.destroyed && !raw.writableEnded) raw.end();
      };
      const write = (chunk: string) => {
        if (!open) {
          pending.push(chunk);
          return;
        }
        if (raw.destroyed || raw.writableEnded) return;
        raw.write(chunk);
        if (raw.writableLength > MAX_BUFFERED_BYTES) {
          request.log.warn({ buffered: raw.writableLength }, 'watcher too slow; closing its stream');
          raw.destroy();
        }
      };
      const stop = await service.watch(
        {
          caller: callerOf(request),
          service: request.query.service,
          lastEventId,
          lastEventIdField: 'Last-Event-ID',
          onEnd: (reason) => {
            ended = reason;
            write(formatSseError(reason));
            if (open) finish();
          },
        },
        (message) => write(formatSse(message)),
      );

      reply.hijack();
      raw.writeHead(200, {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-cache, no-transform',
        connection: 'keep-alive',
        // nginx would otherwise buffer the stream.
        'x-accel-buffering': 'no',
      });
      raw.flushHeaders();
      open = true;
      write('retry: 1000\n\n');
      for (const chunk of pending.splice(0)) write(chunk);
      if (ended) finish();
      const keepAlive = setInterval(() => write(': keep-alive\n\n'), KEEP_ALIVE_MS);
      keepAlive.unref();
      streams.add(raw);
      const started = performance.now();
      raw.once('close', () => {
        clearInterval(keepAlive);
        streams.delete(raw);
        stop();
        request.log.info(
          {
            route: path,
            status: 200,
            ms: Math.round(performance.now() - started),
            ...(ended ? { ended: ended.code } : {}),
          },
          'watch stream closed',
        );
      });
    },
  );
}
