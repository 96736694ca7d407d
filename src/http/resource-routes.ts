import type { JsonSchemaToTsProvider } from '@fastify/type-provider-json-schema-to-ts';
import type { FastifyInstance, FastifyReply } from 'fastify';
import { ErrorCode } from '../core/errors.js';
import type { LockService } from '../core/lock-service.js';
import { API, callerOf } from './lock-routes.js';
import { resourceToJson } from './present.js';
import { apiRoute, describedAs } from './route-docs.js';
import {
  ListResourcesQuery,
  PutResourceBody,
  ResourceJson,
  ResourceListJson,
  ResourceParams,
} from './schemas.js';

const api = { gated: true, api: true } as const;

/** The registry of resources: parse, call the core, present the result. */
export function registerResourceRoutes(root: FastifyInstance, service: LockService): void {
  const app = root.withTypeProvider<JsonSchemaToTsProvider>();

  app.put(
    `${API}/resources/:name`,
    {
      schema: apiRoute(
        { method: 'PUT', ...api },
        {
          operationId: 'putResource',
          summary: 'Register a resource',
          description:
            'Creates (`201`) or replaces (`200`) the resource `name`: its `labels` (a request for a ' +
            'label takes any free resource carrying it), `properties` (string values, shown with every ' +
            'lock on it), `capacity` (its limit: how many exclusive holders it admits, default 1) and ' +
            '`description`. Replacing it leaves its current holders in place. Needs `lock:admin`.',
          tags: ['resources'],
          bodyOptional: true,
        },
        {
          params: ResourceParams,
          body: PutResourceBody,
          response: {
            201: describedAs(ResourceJson, 'Created: the resource.'),
            200: describedAs(ResourceJson, 'Replaced: the resource.'),
          },
        },
      ),
      // The body is optional: a resource with no labels, no properties and capacity 1.
      preValidation: async (request) => {
        request.body ??= {};
      },
    },
    async (request, reply) => {
      const { labels, properties, capacity, description } = request.body ?? {};
      const { resource, created } = await service.putResource({
        caller: callerOf(request),
        name: request.params.name,
        labels,
        properties,
        capacity,
        description,
      });
      return (reply as FastifyReply).status(created ? 201 : 200).send(resourceToJson(resource));
    },
  );

  app.get(
    `${API}/resources`,
    {
      schema: apiRoute(
        { method: 'GET', ...api },
        {
          operationId: 'listResources',
          summary: 'List resources',
          description:
            'The registered resources by name (with `label`, those carrying it), each with its ' +
            'holders, its waiters and how many more exclusive holders it admits now (`free`).',
          tags: ['resources'],
        },
        {
          querystring: ListResourcesQuery,
          response: { 200: describedAs(ResourceListJson, 'The resources, by name.') },
        },
      ),
    },
    async (request) => {
      const resources = await service.listResources({
        caller: callerOf(request),
        label: request.query.label,
      });
      return { resources: resources.map(resourceToJson) };
    },
  );

  app.get(
    `${API}/resources/:name`,
    {
      schema: apiRoute(
        { method: 'GET', ...api },
        {
          operationId: 'getResource',
          summary: 'Get a resource',
          description: 'The registered resource `name`, with its holders and waiters.',
          tags: ['resources'],
          errors: [ErrorCode.RESOURCE_NOT_FOUND],
        },
        { params: ResourceParams, response: { 200: describedAs(ResourceJson, 'The resource.') } },
      ),
    },
    async (request) =>
      resourceToJson(await service.getResource({ caller: callerOf(request), name: request.params.name })),
  );

  app.delete(
    `${API}/resources/:name`,
    {
      schema: apiRoute(
        { method: 'DELETE', ...api },
        {
          operationId: 'deleteResource',
          summary: 'Delete a resource',
          description:
            'Removes the resource `name` from the registry: `409 RESOURCE_IN_USE` while a lock holds ' +
            'it. Needs `lock:admin`.',
          tags: ['resources'],
          errors: [ErrorCode.RESOURCE_NOT_FOUND, ErrorCode.RESOURCE_IN_USE],
        },
        { params: ResourceParams, response: { 204: { type: 'null', description: 'Deleted.' } } },
      ),
    },
    async (request, reply) => {
      await service.deleteResource({ caller: callerOf(request), name: request.params.name });
      return reply.status(204).send();
    },
  );
}
