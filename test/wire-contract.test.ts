import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { loadSync } from '@grpc/proto-loader';
import { PROTO_FILE } from '../src/grpc/server.js';
import { lockToJson } from '../src/http/present.js';
import {
  AcquireHeaders,
  ClaimBody as claimBody,
  CreateGroupBody as createGroupBody,
  CreateLockBody as createLockBody,
  EventJson as eventJson,
  ForceReleaseBody as forceReleaseBody,
  ForceReleasedJson as forceReleasedJson,
  GroupJson as groupJson,
  HistoryJson as historyJson,
  HistoryQuery as historyQuery,
  ListResourcesQuery as listResourcesQuery,
  LockJson as lockJson,
  LockListJson as lockListJson,
  PutResourceBody as putResourceBody,
  QueueJson as queueJson,
  ReleasedJson as releasedJson,
  RenewGroupBody as renewGroupBody,
  RenewLockBody as renewLockBody,
  ResourceJson as resourceJson,
  ResourceListJson as resourceListJson,
} from '../src/http/schemas.js';

/**
 * The wire contract has three descriptions: the domain type (through `lockToJson`), the
 * REST JSON schemas and the .proto. This fails when one of them gains or loses a field
 * without the others.
 */
const definition = loadSync(PROTO_FILE, { keepCase: true });

/** Proto field names in their JSON form (lowerCamelCase, as protobuf's JSON mapping has it). */
function protoJsonFields(message: string): string[] {
  const type = definition[`tracker.lock.v1alpha1.${message}`] as { type: { field: Array<{ name: string }> } };
  return type.type.field
    .map((field) => field.name.replace(/_([a-z])/g, (_, letter: string) => letter.toUpperCase()))
    .sort();
}

describe('wire contract', () => {
  const sample = lockToJson({
    id: 'i',
    service: 's',
    who: 'w',
    createdAt: new Date(0),
    ttlSeconds: 30,
    expiresAt: new Date(30_000),
    fencingToken: 1,
    waiters: 2,
    owner: 'ci',
    limit: 3,
    mode: 'exclusive',
    groupId: 'g',
    resource: { name: 's', labels: ['l'], properties: { k: 'v' } },
    note: 'n',
    link: 'https://ci.example/1',
  });

  test('Lock: domain JSON, REST schema and proto have the same fields', () => {
    assert.deepEqual(Object.keys(sample).sort(), Object.keys(lockJson.properties).sort());
    assert.deepEqual(protoJsonFields('Lock'), Object.keys(lockJson.properties).sort());
    assert.deepEqual([...lockJson.required].sort(), Object.keys(lockJson.properties).sort());
  });

  test('ListLocksResponse matches the REST list body', () => {
    assert.deepEqual(protoJsonFields('ListLocksResponse'), Object.keys(lockListJson.properties).sort());
  });

  test('UnLockResponse matches the REST release body', () => {
    assert.deepEqual(protoJsonFields('UnLockResponse'), Object.keys(releasedJson.properties).sort());
  });

  test('Queue and Waiter match GET /queue/{service}', () => {
    assert.deepEqual(protoJsonFields('Queue'), Object.keys(queueJson.properties).sort());
    assert.deepEqual(
      protoJsonFields('Waiter'),
      Object.keys(queueJson.properties.waiters.items.properties).sort(),
    );
  });

  test('RenewLockRequest takes what POST /lock/{id}/renew takes, plus the id', () => {
    assert.deepEqual(
      protoJsonFields('RenewLockRequest'),
      ['id', ...Object.keys(renewLockBody.properties)].sort(),
    );
  });

  test('LockEvent and GetHistoryResponse match GET /history; ForceReleaseLock matches its route', () => {
    assert.deepEqual(protoJsonFields('LockEvent'), Object.keys(eventJson.properties).sort());
    assert.deepEqual(protoJsonFields('GetHistoryResponse'), Object.keys(historyJson.properties).sort());
    assert.deepEqual(
      protoJsonFields('ForceReleaseLockResponse'),
      Object.keys(forceReleasedJson.properties).sort(),
    );
    assert.deepEqual(
      protoJsonFields('ForceReleaseLockRequest'),
      ['id', ...Object.keys(forceReleaseBody.properties)].sort(),
    );
    assert.deepEqual(protoJsonFields('GetHistoryRequest'), Object.keys(historyQuery.properties).sort());
  });

  test('CreateLockRequest takes what POST /lock takes: its body, and the Idempotency-Key header as request_id', () => {
    assert.deepEqual(
      protoJsonFields('CreateLockRequest'),
      [...Object.keys(createLockBody.properties), 'requestId'].sort(),
    );
    assert.deepEqual(Object.keys(AcquireHeaders.properties), ['idempotency-key']);
  });

  test('AcquireLocksRequest and LockClaim take what POST /locks takes (and request_id); LockGroup is its answer', () => {
    assert.deepEqual(
      protoJsonFields('AcquireLocksRequest'),
      [...Object.keys(createGroupBody.properties), 'requestId'].sort(),
    );
    assert.deepEqual(protoJsonFields('LockClaim'), Object.keys(claimBody.properties).sort());
    assert.deepEqual(protoJsonFields('LockGroup'), Object.keys(groupJson.properties).sort());
    assert.deepEqual(
      protoJsonFields('RenewLockGroupRequest'),
      ['id', ...Object.keys(renewGroupBody.properties)].sort(),
    );
  });

  test('Resource, ResourceRef and the resource requests match the /resources routes', () => {
    assert.deepEqual(protoJsonFields('Resource'), Object.keys(resourceJson.properties).sort());
    assert.deepEqual(
      protoJsonFields('ResourceRef'),
      Object.keys(lockJson.properties.resource.anyOf[1].properties).sort(),
    );
    assert.deepEqual(
      protoJsonFields('PutResourceRequest'),
      ['name', ...Object.keys(putResourceBody.properties)].sort(),
    );
    assert.deepEqual(
      protoJsonFields('ListResourcesRequest'),
      Object.keys(listResourcesQuery.properties).sort(),
    );
    assert.deepEqual(
      protoJsonFields('ListResourcesResponse'),
      Object.keys(resourceListJson.properties).sort(),
    );
  });
});
