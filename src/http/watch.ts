import type { ServerResponse } from 'node:http';
import type { FastifyInstance } from 'fastify';
import { type EventFeed, type FeedMessage, openWatch } from '../core/event-feed.js';
import { eventToJson, lockToJson } from './error-mapping.js';
import { watchQuery } from './schemas.js';

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
    const data = { eventId: message.eventId, locks: message.locks.map(lockToJson) };
    return `id: ${message.eventId}\nevent: snapshot\ndata: ${JSON.stringify(data)}\n\n`;
  }
  const { event } = message;
  return `id: ${event.id}\nevent: ${event.type}\ndata: ${JSON.stringify(eventToJson(event))}\n\n`;
}

/**
 * GET /api/v1alpha1/watch: the held locks, then every change, as Server-Sent Events. The
 * stream resumes after the Last-Event-ID header (or `lastEventId`). Streams end when the
 * server stops; clients reconnect and resume.
 */
export function registerWatch(app: FastifyInstance, path: string, feed: EventFeed): void {
  const streams = new Set<ServerResponse>();
  app.addHook('preClose', async () => {
    for (const stream of streams) stream.end();
  });

  app.get<{ Querystring: { service?: string; lastEventId?: string } }>(
    path,
    {
      schema: {
        querystring: watchQuery,
        headers: {
          type: 'object',
          properties: { 'last-event-id': { type: 'string' } },
        },
      },
    },
    async (request, reply) => {
      const header = request.headers['last-event-id'];
      const lastEventId = typeof header === 'string' && header !== '' ? header : request.query.lastEventId;
      // Until the watcher is live (its snapshot read), messages wait here: a store that
      // cannot be read still gets an ordinary JSON 503, not a broken stream.
      const raw = reply.raw;
      const pending: string[] = [];
      let open = false;
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
      const stop = await openWatch(
        feed,
        { service: request.query.service, lastEventId, lastEventIdField: 'Last-Event-ID' },
        request.caller,
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
      const keepAlive = setInterval(() => write(': keep-alive\n\n'), KEEP_ALIVE_MS);
      keepAlive.unref();
      streams.add(raw);
      const started = performance.now();
      raw.once('close', () => {
        clearInterval(keepAlive);
        streams.delete(raw);
        stop();
        request.log.info(
          { route: path, status: 200, ms: Math.round(performance.now() - started) },
          'watch stream closed',
        );
      });
    },
  );
}
