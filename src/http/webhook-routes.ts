import type { JsonSchemaToTsProvider } from '@fastify/type-provider-json-schema-to-ts';
import type { FastifyInstance, FastifyReply } from 'fastify';
import { ErrorCode } from '../core/errors.js';
import type { WebhookAdmin } from '../core/webhooks.js';
import { API, callerOf } from './lock-routes.js';
import { webhookToJson } from './present.js';
import { apiRoute, describedAs } from './route-docs.js';
import { PutWebhookBody, WebhookJson, WebhookListJson, WebhookParams } from './schemas.js';

const api = { gated: true, api: true } as const;

/** Webhooks (lock:admin over every service): parse, call the core, present the result. */
export function registerWebhookRoutes(root: FastifyInstance, webhooks: WebhookAdmin): void {
  const app = root.withTypeProvider<JsonSchemaToTsProvider>();

  app.put(
    `${API}/webhooks/:name`,
    {
      schema: apiRoute(
        { method: 'PUT', ...api },
        {
          operationId: 'putWebhook',
          summary: 'Create or replace a webhook',
          description:
            'Creates (`201`, delivering the events from now on) or replaces (`200`, keeping where its ' +
            'delivery stands) the webhook `name`. Every event it wants is POSTed to `url`, in order, at ' +
            'least once, with `X-Tracker-Event`, `X-Tracker-Delivery` (a unique id: dedupe on it) and ' +
            '`X-Tracker-Signature-256: sha256=<HMAC-SHA256 of the body with the secret>`. A URL that ' +
            'resolves to a loopback, link-local or metadata address is refused unless the server runs with ' +
            '`--webhooks-allow-private`. Needs `lock:admin` over every service.',
          tags: ['webhooks'],
        },
        {
          params: WebhookParams,
          body: PutWebhookBody,
          response: {
            201: describedAs(WebhookJson, 'Created: the webhook.'),
            200: describedAs(WebhookJson, 'Replaced: the webhook.'),
          },
        },
      ),
    },
    async (request, reply) => {
      const { status, created } = await webhooks.put(callerOf(request), {
        ...request.body,
        name: request.params.name,
      });
      return (reply as FastifyReply).status(created ? 201 : 200).send(webhookToJson(status));
    },
  );

  app.get(
    `${API}/webhooks`,
    {
      schema: apiRoute(
        { method: 'GET', ...api },
        {
          operationId: 'listWebhooks',
          summary: 'List webhooks',
          description: 'Every webhook by name, with where its delivery stands. Needs `lock:admin`.',
          tags: ['webhooks'],
        },
        { response: { 200: describedAs(WebhookListJson, 'The webhooks, by name.') } },
      ),
    },
    async (request) => ({ webhooks: (await webhooks.list(callerOf(request))).map(webhookToJson) }),
  );

  app.get(
    `${API}/webhooks/:name`,
    {
      schema: apiRoute(
        { method: 'GET', ...api },
        {
          operationId: 'getWebhook',
          summary: 'Get a webhook',
          description:
            'The webhook `name` (never its secret) and its delivery: the cursor, the events waiting and ' +
            'the oldest one’s age (`lagSeconds`), counts, the last status and error, the next attempt.',
          tags: ['webhooks'],
          errors: [ErrorCode.WEBHOOK_NOT_FOUND],
        },
        { params: WebhookParams, response: { 200: describedAs(WebhookJson, 'The webhook.') } },
      ),
    },
    async (request) => webhookToJson(await webhooks.get(callerOf(request), request.params.name)),
  );

  app.delete(
    `${API}/webhooks/:name`,
    {
      schema: apiRoute(
        { method: 'DELETE', ...api },
        {
          operationId: 'deleteWebhook',
          summary: 'Delete a webhook',
          description: 'Stops and forgets the webhook `name`. Needs `lock:admin`.',
          tags: ['webhooks'],
          errors: [ErrorCode.WEBHOOK_NOT_FOUND],
        },
        { params: WebhookParams, response: { 204: { type: 'null', description: 'Deleted.' } } },
      ),
    },
    async (request, reply) => {
      await webhooks.delete(callerOf(request), request.params.name);
      return reply.status(204).send();
    },
  );
}
