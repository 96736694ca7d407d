import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { parseAllDocuments } from 'yaml';
import { loadConfig } from '../src/config/load-config.js';
import { ROOT, runToExit } from './support/server-process.js';

/**
 * deploy/kubernetes (issue 19, point 2): every overlay rendered offline by `kubectl kustomize`,
 * then checked as a reviewer would: probes, limits and a non-root security context on every
 * container, the Service's ports on the server's, no `latest`, and the settings the server
 * itself accepts.
 */

const KUBERNETES = join(ROOT, 'deploy/kubernetes');

// biome-ignore lint/suspicious/noExplicitAny: rendered manifests are read as loose JSON.
type Manifest = any;

async function render(overlay: string): Promise<Manifest[]> {
  const run = await runToExit('kubectl', ['kustomize', join(KUBERNETES, 'overlays', overlay)], {
    timeoutMs: 60_000,
  });
  assert.equal(run.code, 0, run.stderr);
  return parseAllDocuments(run.stdout).map((document) => document.toJS());
}

const ofKind = (manifests: Manifest[], kind: string) =>
  manifests.filter((manifest) => manifest.kind === kind);

/** Every container of a pod template, init containers too. */
const containersOf = (pod: Manifest): Manifest[] => [
  ...(pod.spec.initContainers ?? []),
  ...pod.spec.containers,
];

/** What every container must have, pod-level settings counting for the container. */
function checkContainer(pod: Manifest, container: Manifest, where: string): void {
  const limits = container.resources?.limits ?? {};
  const requests = container.resources?.requests ?? {};
  assert.ok(limits.cpu && limits.memory, `${where}: CPU and memory limits`);
  assert.ok(requests.cpu && requests.memory, `${where}: CPU and memory requests`);
  const security = container.securityContext ?? {};
  assert.equal(
    security.runAsNonRoot ?? pod.spec.securityContext?.runAsNonRoot,
    true,
    `${where}: runAsNonRoot`,
  );
  assert.equal(security.allowPrivilegeEscalation, false, `${where}: no privilege escalation`);
  assert.deepEqual(security.capabilities?.drop, ['ALL'], `${where}: every capability dropped`);
  assert.notEqual(security.privileged, true, `${where}: not privileged`);
  const image: string = container.image;
  assert.match(image, /:[\w.-]+$|@sha256:[0-9a-f]{64}$/, `${where}: ${image} names a tag or a digest`);
  assert.doesNotMatch(image, /:latest$/, `${where}: ${image} is not :latest`);
}

/** The server's settings as the Deployment gives them (a Secret's value by a stand-in). */
function environment(container: Manifest): Record<string, string> {
  return Object.fromEntries(
    container.env.map((entry: Manifest) => [
      entry.name,
      entry.value ?? (entry.valueFrom?.secretKeyRef ? 'postgres://tracker@db:5432/tracker' : ''),
    ]),
  );
}

for (const overlay of ['postgres', 'sqlite']) {
  describe(`deploy/kubernetes/overlays/${overlay}`, () => {
    test('every container: probes, limits, a non-root read-only security context, a pinned image', async () => {
      const manifests = await render(overlay);
      const [deployment] = ofKind(manifests, 'Deployment');
      assert.ok(deployment, 'a Deployment');
      const pod = deployment.spec.template;
      assert.equal(pod.spec.automountServiceAccountToken, false);
      assert.equal(pod.spec.securityContext.seccompProfile.type, 'RuntimeDefault');
      for (const container of containersOf(pod)) {
        const where = `${overlay} ${container.name}`;
        checkContainer(pod, container, where);
        assert.equal(container.securityContext.readOnlyRootFilesystem, true, `${where}: read-only root`);
        assert.equal(container.readinessProbe.httpGet.path, '/readyz', `${where}: readiness on /readyz`);
        assert.equal(container.livenessProbe.httpGet.path, '/healthz', `${where}: liveness on /healthz`);
      }
    });

    test('the Service `tracker` (http://tracker:8080) matches the server’s ports, which the server accepts', async () => {
      const manifests = await render(overlay);
      const [deployment] = ofKind(manifests, 'Deployment');
      const [service] = ofKind(manifests, 'Service');
      assert.equal(service.metadata.name, 'tracker');
      const container = deployment.spec.template.spec.containers[0];
      const env = environment(container);
      const loaded = loadConfig(container.args.slice(1), env);
      assert.ok(!loaded.help);
      const { config } = loaded;
      const containerPorts: Record<string, number> = Object.fromEntries(
        container.ports.map((port: Manifest) => [port.name, port.containerPort]),
      );
      assert.deepEqual({ ...containerPorts }, { http: config.httpPort, grpc: config.grpcPort });
      for (const port of service.spec.ports) {
        assert.equal(port.port, containerPorts[port.name], `Service port ${port.name} is the server's`);
        assert.equal(port.targetPort, port.name);
      }
      assert.deepEqual(
        service.spec.ports.map((port: Manifest) => [port.name, port.port]),
        [
          ['http', 8080],
          ['grpc', 8765],
        ],
      );
      assert.equal(config.host, '0.0.0.0', 'listens beyond the pod');
      assert.ok(config.allowedHosts?.includes('tracker'), 'answers to the Host `tracker`');
      for (const probe of [container.readinessProbe, container.livenessProbe]) {
        assert.ok(
          probe.httpGet.port in containerPorts,
          `probe port ${probe.httpGet.port} is a container port`,
        );
      }
      assert.equal(config.authTokensFile, '/etc/tracker/tokens/tokens.yaml');
      const tokens = container.volumeMounts.find((mount: Manifest) => mount.name === 'tokens');
      assert.equal(tokens.mountPath, '/etc/tracker/tokens');
      const volume = deployment.spec.template.spec.volumes.find((one: Manifest) => one.name === 'tokens');
      assert.equal(volume.secret.secretName, 'tracker-tokens', 'the tokens file from a Secret');
      if (overlay === 'postgres') {
        assert.ok(deployment.spec.replicas >= 2, 'several replicas');
        assert.equal(config.database.kind, 'postgres');
        const url = container.env.find((entry: Manifest) => entry.name === 'TRACKER_DATABASE_URL');
        assert.deepEqual(url.valueFrom.secretKeyRef, { name: 'tracker-database', key: 'url' });
        assert.equal(ofKind(manifests, 'PodDisruptionBudget')[0]?.spec.maxUnavailable, 1);
      } else {
        assert.equal(deployment.spec.replicas, 1, 'one writer on the file');
        assert.equal(deployment.spec.strategy.type, 'Recreate', 'never two pods on the file');
        assert.equal(config.database.kind, 'sqlite');
        const data = container.volumeMounts.find((mount: Manifest) => mount.name === 'data');
        assert.equal(data.mountPath, '/var/lib/tracker');
        const claim = deployment.spec.template.spec.volumes.find((one: Manifest) => one.name === 'data');
        assert.equal(
          claim.persistentVolumeClaim.claimName,
          ofKind(manifests, 'PersistentVolumeClaim')[0]?.metadata.name,
        );
      }
    });
  });
}

describe('deploy/kubernetes/examples/cronjob.yaml', () => {
  test('the guide’s CronJob fetches the single-executable CLI, checks it, and runs under limits, non-root', () => {
    const [cronJob] = parseAllDocuments(readFileSync(join(KUBERNETES, 'examples/cronjob.yaml'), 'utf8')).map(
      (document) => document.toJS() as Manifest,
    );
    assert.equal(cronJob.kind, 'CronJob');
    const pod = cronJob.spec.jobTemplate.spec.template;
    for (const container of containersOf(pod)) checkContainer(pod, container, `cronjob ${container.name}`);
    const fetch = pod.spec.initContainers[0].command.join('\n');
    assert.match(fetch, /\$TRACKER_URL\/cli\/tracker-linux-x64"/);
    assert.match(fetch, /sha256sum -c -/);
    const run = pod.spec.containers[0].command.join('\n');
    assert.match(run, /\/tracker\/tracker run --service nightly-report/);
    assert.equal(pod.spec.containers[0].env[0].value, 'http://tracker:8080');
  });
});
