import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { Validator } from '@seriousme/openapi-schema-validator';
import Fastify from 'fastify';
import { registerOpenApi } from '../src/http/openapi.js';
import { apiRoute } from '../src/http/route-docs.js';
import { CreateLockBody, ErrorJson, ReleaseErrorJson } from '../src/http/schemas.js';
import { CHROMIUM_PATH, launchBrowser, openPage } from './support/browser.js';
import { type ServerProcess, startServerProcess, tempDir } from './support/server-process.js';

type Json = Record<string, unknown>;

/** A route as the server process declared it, recorded by the preload below. */
interface RecordedRoute {
  method: string | string[];
  url: string;
  schema?: Json;
}

/**
 * Loaded into the server process (NODE_OPTIONS --import): every Fastify instance created
 * there gets an onRoute hook, from the moment it exists, that writes each route down. The
 * route list comes from the server itself, not from a list kept by hand here.
 */
const RECORDER = `
import { subscribe } from 'node:diagnostics_channel';
import { appendFileSync } from 'node:fs';
const out = process.env.TRACKER_TEST_ROUTES_FILE;
subscribe('fastify.initialization', ({ fastify }) => {
  fastify.addHook('onRoute', (route) => {
    appendFileSync(out, JSON.stringify({ method: route.method, url: route.url, schema: route.schema }) + '\\n');
  });
});
`;

/**
 * What the description leaves out: the dashboard, its assets, the docs and the document, and
 * the single-executable client's download (a file, like the assets).
 */
const UNDOCUMENTED = /^\/(docs(\/.*)?|openapi\.json|assets(\/.*)?|cli\/.*)?$/;

const HTTP_METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];

function toOpenApiPath(url: string): string {
  return url.replace(/:([A-Za-z0-9_]+)/g, '{$1}');
}

function operations(doc: Json): Array<{ key: string; operation: Json }> {
  const out: Array<{ key: string; operation: Json }> = [];
  for (const [path, item] of Object.entries(doc.paths as Record<string, Json>)) {
    for (const [method, operation] of Object.entries(item)) {
      if (HTTP_METHODS.includes(method))
        out.push({ key: `${method.toUpperCase()} ${path}`, operation: operation as Json });
    }
  }
  return out;
}

async function getJson(url: string): Promise<{ status: number; headers: Headers; json: Json }> {
  const response = await fetch(url, { signal: AbortSignal.timeout(10_000) });
  return { status: response.status, headers: response.headers, json: (await response.json()) as Json };
}

describe('API description', () => {
  let server: ServerProcess;
  let routes: RecordedRoute[];
  let doc: Json;
  const dir = tempDir('tracker-openapi-');

  before(async () => {
    const recorder = join(dir.path, 'record-routes.mjs');
    const routesFile = join(dir.path, 'routes.jsonl');
    writeFileSync(recorder, RECORDER);
    writeFileSync(routesFile, '');
    const nodeOptions = [process.env.NODE_OPTIONS, `--import=${pathToFileURL(recorder).href}`];
    server = await startServerProcess({
      env: { NODE_OPTIONS: nodeOptions.filter(Boolean).join(' '), TRACKER_TEST_ROUTES_FILE: routesFile },
    });
    // Routes are declared before the server listens: the file is complete by now.
    routes = readFileSync(routesFile, 'utf8')
      .split('\n')
      .filter((line) => line !== '')
      .map((line) => JSON.parse(line) as RecordedRoute);
    const { status, json } = await getJson(`${server.baseUrl}/openapi.json`);
    assert.equal(status, 200);
    doc = json;
  });

  after(async () => {
    await server?.stop();
    dir.remove();
  });

  test('GET /openapi.json is a valid OpenAPI 3.1 document', async () => {
    const response = await fetch(`${server.baseUrl}/openapi.json`, { signal: AbortSignal.timeout(10_000) });
    assert.match(response.headers.get('content-type') ?? '', /^application\/json/);
    assert.equal(doc.openapi, '3.1.0');
    const validator = new Validator();
    const result = await validator.validate(doc);
    assert.deepEqual(result.errors, undefined, JSON.stringify(result.errors, null, 2));
    assert.equal(result.valid, true);
    assert.equal(validator.version, '3.1');
  });

  test('lists every route the server serves, with its methods, and nothing else', () => {
    const served = new Set<string>();
    for (const route of routes) {
      for (const method of [route.method].flat()) {
        if (method !== 'HEAD' && !UNDOCUMENTED.test(route.url)) {
          served.add(`${method} ${toOpenApiPath(route.url)}`);
        }
      }
    }
    // The recorder saw the routes of the real app, the left-out ones included.
    const all = new Set(routes.map((route) => route.url));
    for (const url of ['/api/v1alpha1/lock', '/healthz', '/openapi.json', '/docs'])
      assert.ok(all.has(url), url);

    const documented = operations(doc).map(({ key }) => key);
    assert.deepEqual([...documented].sort(), [...served].sort());
    for (const path of Object.keys(doc.paths as Json)) assert.doesNotMatch(path, UNDOCUMENTED);
  });

  test('the schemas are the very ones that validate and serialize', () => {
    const lock = (doc.paths as Record<string, Record<string, Json>>)['/api/v1alpha1/lock']?.post;
    const body = lock?.requestBody as { content: Record<string, { schema: unknown }> } | undefined;
    assert.deepEqual(body?.content['application/json']?.schema, { ...CreateLockBody });

    // Every route: request body, query and path parameters, response bodies, as declared.
    for (const route of routes) {
      const schema = route.schema;
      if (schema === undefined || UNDOCUMENTED.test(route.url)) continue;
      for (const method of [route.method].flat().filter((m) => m !== 'HEAD')) {
        const where = `${method} ${route.url}`;
        const item = (doc.paths as Record<string, Record<string, Json>>)[toOpenApiPath(route.url)];
        const operation = item?.[method.toLowerCase()] as Json;
        if (schema.body !== undefined) {
          const requestBody = operation.requestBody as { content: Record<string, { schema: unknown }> };
          assert.deepEqual(requestBody.content['application/json']?.schema, schema.body, where);
        }
        const parameters = (operation.parameters ?? []) as Array<{
          name: string;
          in: string;
          schema: unknown;
        }>;
        for (const [part, location] of [
          ['querystring', 'query'],
          ['params', 'path'],
        ] as const) {
          const properties: Json = (schema[part] as { properties?: Json } | undefined)?.properties ?? {};
          for (const [name, property] of Object.entries(properties)) {
            const parameter = parameters.find((p) => p.name === name && p.in === location);
            // A parameter's description is the parameter's, not its schema's.
            assert.deepEqual(parameter?.schema, withoutDescription(property), `${where} ${location} ${name}`);
          }
        }
        const responses = operation.responses as Record<
          string,
          { content?: Record<string, { schema: unknown }> }
        >;
        for (const [status, response] of Object.entries((schema.response ?? {}) as Json)) {
          const json: { schema: unknown } | undefined =
            responses[status.toUpperCase()]?.content?.['application/json'];
          if (json) assert.deepEqual(json.schema, response, `${where} ${status}`);
        }
      }
    }
  });

  test('every operation has a summary, a tag and a unique operationId', () => {
    const ids = new Set<string>();
    for (const { key, operation } of operations(doc)) {
      assert.equal(typeof operation.summary, 'string', `${key} has no summary: give it one (apiRoute)`);
      assert.notEqual(operation.summary, '', key);
      assert.ok(Array.isArray(operation.tags) && operation.tags.length > 0, `${key} has no tag`);
      assert.equal(typeof operation.operationId, 'string', key);
      assert.ok(
        !ids.has(operation.operationId as string),
        `${key}: duplicate ${String(operation.operationId)}`,
      );
      ids.add(operation.operationId as string);
    }
  });

  test('error responses are documented with the error body', () => {
    const paths = doc.paths as Record<string, Record<string, { responses: Record<string, Json> }>>;
    const schemaOf = (response: Json | undefined) =>
      withoutDescription(
        (response?.content as Record<string, { schema: Json }> | undefined)?.['application/json']?.schema,
      );
    const acquire = paths['/api/v1alpha1/lock']?.post?.responses ?? {};
    for (const status of ['400', '401', '403', '409', '413', '415', '429', '500', '503']) {
      assert.deepEqual(schemaOf(acquire[status]), { ...ErrorJson }, `POST /lock ${status}`);
    }
    assert.match(String(acquire['409']?.description), /LOCK_HELD[\s\S]*WAIT_TIMEOUT/);
    assert.match(String(acquire['429']?.description), /QUEUE_FULL[\s\S]*TOO_MANY_LOCKS[\s\S]*RATE_LIMITED/);
    const release = paths['/api/v1alpha1/lock/{id}']?.delete?.responses ?? {};
    assert.deepEqual(schemaOf(release['404']), { ...ReleaseErrorJson });
    assert.match(String(release['404']?.description), /LOCK_NOT_FOUND/);
    const getUnlock = paths['/api/v1alpha1/unlock/{id}']?.get as Json | undefined;
    assert.match(String(getUnlock?.description), /Guide's[\s\S]*scripts[\s\S]*DELETE/);
    // Gated routes take a bearer token or nothing (authentication off); health checks need none.
    assert.deepEqual((paths['/api/v1alpha1/lock']?.post as Json | undefined)?.security, [{ bearer: [] }, {}]);
    assert.equal((paths['/healthz']?.get as Json | undefined)?.security, undefined);
    assert.deepEqual(Object.keys((doc.components as Json).securitySchemes as Json), ['bearer']);
    // An optional body is documented as such.
    const renew = paths['/api/v1alpha1/lock/{id}/renew']?.post as Json | undefined;
    assert.equal((renew?.requestBody as Json | undefined)?.required, false);
    assert.equal((lock(paths).requestBody as Json | undefined)?.required, true);
    assert.equal(renew?.['x-body-optional'], undefined, 'the marker does not reach the document');

    // The SSE route, once served, answers text/event-stream.
    const watch = paths['/api/v1alpha1/watch']?.get?.responses;
    if (watch) assert.ok((watch['200']?.content as Json | undefined)?.['text/event-stream']);
  });

  test('groups and resources are described, with their error codes', () => {
    const paths = doc.paths as Record<string, Record<string, Json>>;
    const expected: Array<[string, string, string]> = [
      ['/api/v1alpha1/locks', 'post', 'createLockGroup'],
      ['/api/v1alpha1/locks/{groupId}', 'get', 'getLockGroup'],
      ['/api/v1alpha1/locks/{groupId}/renew', 'post', 'renewLockGroup'],
      ['/api/v1alpha1/locks/{groupId}', 'delete', 'releaseLockGroup'],
      ['/api/v1alpha1/resources', 'get', 'listResources'],
      ['/api/v1alpha1/resources/{name}', 'put', 'putResource'],
      ['/api/v1alpha1/resources/{name}', 'get', 'getResource'],
      ['/api/v1alpha1/resources/{name}', 'delete', 'deleteResource'],
    ];
    for (const [path, method, operationId] of expected) {
      assert.equal(paths[path]?.[method]?.operationId, operationId, `${method.toUpperCase()} ${path}`);
    }
    const responses = (path: string, method: string) =>
      (paths[path]?.[method]?.responses ?? {}) as Record<string, Json>;
    for (const path of ['/api/v1alpha1/lock', '/api/v1alpha1/locks']) {
      assert.match(String(responses(path, 'post')['409']?.description), /LOCK_HELD[\s\S]*LIMIT_MISMATCH/);
      assert.match(String(responses(path, 'post')['404']?.description), /NO_SUCH_LABEL/);
      assert.ok(responses(path, 'post')['201'], `${path} 201`);
    }
    const remove = responses('/api/v1alpha1/resources/{name}', 'delete');
    assert.match(String(remove['409']?.description), /RESOURCE_IN_USE/);
    assert.match(String(remove['404']?.description), /RESOURCE_NOT_FOUND/);
    assert.ok(remove['204'], 'DELETE answers 204');
    const put = responses('/api/v1alpha1/resources/{name}', 'put');
    assert.ok(put['201'] && put['200'], 'PUT answers 201 created or 200 replaced');
    assert.equal(
      (paths['/api/v1alpha1/resources/{name}']?.put?.requestBody as Json | undefined)?.required,
      false,
      'the body is optional',
    );
  });

  test('GET /docs and its assets come from this server, under a same-origin CSP', async () => {
    const page = await fetch(`${server.baseUrl}/docs`, { signal: AbortSignal.timeout(10_000) });
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-type') ?? '', /^text\/html/);
    const csp = page.headers.get('content-security-policy') ?? '';
    assert.match(csp, /default-src 'self'/);
    assert.match(csp, /script-src 'self'(;|$)/);
    const html = await page.text();
    assert.doesNotMatch(html, /https?:\/\//, 'no absolute URL in the page');
    assert.doesNotMatch(html, /<script>/, 'no inline script');
    for (const [file, type] of [
      ['swagger-ui-bundle.js', /javascript/],
      ['swagger-ui.css', /text\/css/],
      ['init.js', /javascript/],
      ['favicon-32x32.png', /image\/png/],
    ] as const) {
      const response = await fetch(`${server.baseUrl}/docs/${file}`, { signal: AbortSignal.timeout(10_000) });
      assert.equal(response.status, 200, file);
      assert.match(response.headers.get('content-type') ?? '', type, file);
      assert.ok((await response.arrayBuffer()).byteLength > 0, file);
    }
    const init = await (await fetch(`${server.baseUrl}/docs/init.js`)).text();
    assert.match(init, /validatorUrl: null/);
    const missing = await getJson(`${server.baseUrl}/docs/swagger-ui.js.map`);
    assert.equal(missing.status, 404);
    assert.equal(missing.json.code, 'NOT_FOUND');
  });

  test('/docs renders the operations offline in Chromium', { timeout: 90_000 }, async () => {
    assert.ok(existsSync(CHROMIUM_PATH), `${CHROMIUM_PATH} is missing: apt-get install -y chromium`);
    const origin = new URL(server.baseUrl).origin;
    const browser = await launchBrowser();
    try {
      // Records errors and CSP violations, and refuses (and reports) any other origin.
      const { page, errors, dialogs } = await openPage(browser, { height: 1400 });
      const requests: string[] = [];
      page.on('request', (request) => requests.push(request.url()));

      await page.goto(`${server.baseUrl}/docs`, { waitUntil: 'load', timeout: 30_000 });
      const expected = operations(doc).map(({ key }) => key);
      // A locator, not waitForFunction: polling a predicate needs eval, which the page's CSP
      // (script-src 'self') refuses whenever the first check comes too early.
      await page
        .locator('.opblock')
        .nth(expected.length - 1)
        .waitFor({ timeout: 30_000 });
      const shown = await page.$$eval('.opblock', (blocks) =>
        blocks.map(
          (block) =>
            `${block.querySelector('.opblock-summary-method')?.textContent ?? ''} ${
              block.querySelector('.opblock-summary-path')?.getAttribute('data-path') ?? ''
            }`,
        ),
      );
      assert.deepEqual([...shown].sort(), [...expected].sort());
      const text = (await page.locator('#swagger-ui').textContent({ timeout: 10_000 })) ?? '';
      assert.match(text, /Acquire a lock/);
      assert.match(text, /Tracker/);

      assert.ok(requests.includes(`${origin}/openapi.json`), 'the page loaded the document');
      for (const url of requests) {
        assert.ok(url.startsWith('data:') || new URL(url).hostname === '127.0.0.1', `request to ${url}`);
      }
      assert.deepEqual(errors, []);
      assert.deepEqual(dialogs, []);
    } finally {
      await browser.close();
    }
  });
});

describe('registerOpenApi', () => {
  test('documents the tagged routes registered after it, with their words, and hides the rest', async () => {
    const app = Fastify();
    registerOpenApi(app);
    await app.register(async (routes) => {
      routes.get(
        '/extra/:thing',
        {
          schema: apiRoute(
            { method: 'GET', gated: false, api: false },
            { operationId: 'getThing', summary: 'A thing', tags: ['operations'] },
            {
              params: { type: 'object', properties: { thing: { type: 'string', minLength: 2 } } },
              response: { 200: { type: 'object', properties: { thing: { type: 'string' } } } },
            },
          ),
        },
        async (request) => ({ thing: (request.params as { thing: string }).thing }),
      );
      routes.get('/untagged', async () => ({}));
    });
    try {
      const response = await app.inject('/openapi.json');
      assert.equal(response.statusCode, 200);
      const document = response.json() as Json;
      assert.equal((await new Validator().validate(document)).valid, true);
      assert.deepEqual(Object.keys(document.paths as Json), ['/extra/{thing}']);
      const operation = (document.paths as Record<string, Record<string, Json>>)['/extra/{thing}']?.get;
      assert.equal(operation?.operationId, 'getThing');
      assert.equal(operation?.summary, 'A thing');
      assert.deepEqual(operation?.parameters, [
        { schema: { type: 'string', minLength: 2 }, in: 'path', name: 'thing', required: true },
      ]);
      assert.ok(
        (operation?.responses as Json | undefined)?.['400'],
        'a constrained parameter can be refused',
      );
      assert.ok((operation?.responses as Json | undefined)?.['500'], 'every route can fail');
      // Built once: the same document every time.
      assert.equal((await app.inject('/openapi.json')).body, response.body);
    } finally {
      await app.close();
    }
  });
});

/** A schema without its top-level description (a response's or parameter's words). */
function withoutDescription(schema: unknown): unknown {
  if (typeof schema !== 'object' || schema === null) return schema;
  const { description: _description, ...rest } = schema as Json;
  return rest;
}

function lock(paths: Record<string, Record<string, Json>>): Json {
  return paths['/api/v1alpha1/lock']?.post ?? {};
}
