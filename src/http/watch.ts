import type { ServerResponse } from 'node:http';
import type { JsonSchemaToTsProvider } from '@fastify/type-provider-json-schema-to-ts';
import type { FastifyInstance } from 'fastify';
import { ownerName } from '../core/auth.js';
import type { TrackerError } from '../core/errors.js';
import type { FeedMessage } from '../core/event-feed.js';
import type { LockService } from '../core/lock-service.js';
import type { WatcherRegistry } from '../core/watchers.js';
import { toHttpError } from './error-mapping.js';
import { API, callerOf } from './lock-routes.js';
import { eventToJson, lockToJson } from './present.js';
import { apiRoute } from './route-docs.js';
import { type SnapshotJson, WatchHeaders, WatchQuery } from './schemas.js';

/** A comment line every so often keeps proxies and load balancers from closing an idle stream. */
const KEEP_ALIVE_MS = 15_000;
/**
 * A stream dropped for reading too slowly gets its reason as its last message; a client
 * that does not read even that is disconnected after this long.
 */
const DROP_GRACE_MS = 10_000;

/**
 * One Server-Sent Events message. `data` is one line of JSON (JSON never holds a raw newline).
 * Only a snapshot's last page carries the `id`: a client cut off in the middle of a snapshot
 * resumes from where it was before it, not after a state it never received whole.
 */
export function formatSse(message: FeedMessage): string {
  if (message.kind === 'snapshot') {
    const data: SnapshotJson = {
      eventId: message.eventId,
      locks: message.locks.map(lockToJson),
      continued: message.continued,
      more: message.more,
    };
    const id = message.more ? '' : `id: ${message.eventId}\n`;
    return `${id}event: snapshot\ndata: ${JSON.stringify(data)}\n\n`;
  }
  const { event } = message;
  return `id: ${event.id}\nevent: ${event.type}\ndata: ${JSON.stringify(eventToJson(event))}\n\n`;
}

/**
 * The last message of a stream the service ended (its token revoked or narrowed): `event:
 * error` and the error body of the status the same refusal would get (`code` UNAUTHENTICATED
 * or PERMISSION_DENIED). No `id`: a client that reconnects resumes where it was, if still allowed.
 */
export function formatSseError(reason: unknown): string {
  return `event: error\ndata: ${JSON.stringify(toHttpError(reason).body)}\n\n`;
}

/**
 * GET /api/v1alpha1/watch: the held locks, then every change, as Server-Sent Events. The
 * stream resumes after the Last-Event-ID header (or `lastEventId`). Streams end when the
 * server stops (clients reconnect and resume), and with an `event: error` message when the
 * stream's token is revoked or may no longer watch this.
 */
export function registerWatch(root: FastifyInstance, service: LockService, watchers: WatcherRegistry): void {
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
      const caller = callerOf(request);
      const raw = reply.raw;
      // The stream opens with the first message: until then (the first read of the store) a
      // store that cannot be read still gets an ordinary JSON 503, not a broken stream.
      let open = false;
      /** Why the stream was ended from this side (too slow; its token revoked or narrowed). */
      let ended: TrackerError | null = null;
      /** Ends the stream with `reason` as its last message. */
      const endWith = (reason: TrackerError) => {
        ended = reason;
        if (!open || raw.destroyed || raw.writableEnded) return;
        raw.end(formatSseError(reason));
        // A client that does not even read that is disconnected.
        setTimeout(() => raw.destroy(), DROP_GRACE_MS).unref();
      };
      const slot = watchers.open(ownerName(caller) ?? `address:${request.ip}`, (reason) => {
        request.log.warn({ code: reason.code }, reason.message);
        endWith(reason);
      });
      const openStream = () => {
        open = true;
        reply.hijack();
        raw.writeHead(200, {
          'content-type': 'text/event-stream; charset=utf-8',
          'cache-control': 'no-cache, no-transform',
          connection: 'keep-alive',
          // nginx would otherwise buffer the stream.
          'x-accel-buffering': 'no',
        });
        raw.flushHeaders();
        raw.write('retry: 1000\n\n');
      };
      const write = (chunk: string) => {
        if (ended || raw.destroyed || raw.writableEnded) return;
        if (!open) openStream();
        const bytes = Buffer.byteLength(chunk);
        raw.write(chunk, () => slot.sent(bytes));
        slot.queued(bytes);
      };
      // The client may leave at any moment, the snapshot's pages included.
      let stop: (() => void) | null = null;
      let closed = false;
      const started = performance.now();
      raw.once('close', () => {
        closed = true;
        clearInterval(keepAlive);
        streams.delete(raw);
        stop?.();
        slot.close();
        if (open) {
          request.log.info(
            {
              route: path,
              status: 200,
              ms: Math.round(performance.now() - started),
              ...(ended ? { ended: (ended as TrackerError).code } : {}),
            },
            'watch stream closed',
          );
        }
      });
      let keepAlive: ReturnType<typeof setInterval> | undefined;
      try {
        stop = await service.watch(
          {
            caller,
            service: request.query.service,
            lastEventId,
            lastEventIdField: 'Last-Event-ID',
            drained: () => slot.drained(),
            // The token was revoked or narrowed: its reason is the stream's last message.
            onEnd: (reason) => {
              if (!open) openStream();
              endWith(reason);
            },
          },
          (message) => write(formatSse(message)),
        );
      } catch (error) {
        slot.close();
        if (!open) throw error;
        // The stream had begun: the error is its last message.
        if (!raw.destroyed && !raw.writableEnded) {
          raw.end(formatSseError(error));
        }
        return;
      }
      if (closed) {
        stop();
        return;
      }
      if (!open) openStream();
      keepAlive = setInterval(() => write(': keep-alive\n\n'), KEEP_ALIVE_MS);
      keepAlive.unref();
      streams.add(raw);
    },
  );
}
