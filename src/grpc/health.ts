import { status } from '@grpc/grpc-js';
import type { HealthHandlers } from './generated/grpc/health/v1/Health.js';
import type { _grpc_health_v1_HealthCheckResponse_ServingStatus__Output } from './generated/grpc/health/v1/HealthCheckResponse.js';

/** Serving statuses of grpc.health.v1 (the enum as proto-loader gives it: names). */
type ServingStatus = Exclude<_grpc_health_v1_HealthCheckResponse_ServingStatus__Output, 'UNKNOWN'>;

/** How often a Watch looks at the store again, in ms. */
const WATCH_INTERVAL_MS = 5000;

export interface HealthOptions {
  /** The services this server reports on, besides "" (the server as a whole). */
  readonly services: readonly string[];
  /** Resolves when the store answers: SERVING; rejects: NOT_SERVING. */
  readonly ready: () => Promise<void>;
}

/**
 * grpc.health.v1.Health: Check and Watch, for load balancers and Kubernetes gRPC
 * probes. Every service (and "") is SERVING exactly when the store answers, like /readyz;
 * once `stopping` is called, NOT_SERVING, so that balancers drain this replica first.
 */
export function createHealthService({ services, ready }: HealthOptions) {
  const known = new Set(['', ...services]);
  const watches = new Map<() => void, (serving: ServingStatus) => void>();
  let stopping = false;

  const current = async (): Promise<ServingStatus> => {
    if (stopping) return 'NOT_SERVING';
    try {
      await ready();
      return 'SERVING';
    } catch {
      return 'NOT_SERVING';
    }
  };

  const handlers: HealthHandlers = {
    Check: (call, callback) => {
      if (!known.has(call.request.service)) {
        callback({ code: status.NOT_FOUND, details: `unknown service "${call.request.service}"` });
        return;
      }
      void current().then((serving) => callback(null, { status: serving }));
    },
    Watch: (call) => {
      // The protocol: an unknown service is reported (SERVICE_UNKNOWN), not an error, and
      // a message is sent only when the status changes.
      let last: ServingStatus | null = null;
      const send = (serving: ServingStatus) => {
        if (serving === last || call.cancelled || call.writableEnded) return;
        last = serving;
        call.write({ status: serving });
      };
      const check = () => {
        if (!known.has(call.request.service)) send('SERVICE_UNKNOWN');
        else void current().then(send);
      };
      const end = () => {
        clearInterval(timer);
        watches.delete(end);
        if (!call.writableEnded) call.end();
      };
      const timer = setInterval(check, WATCH_INTERVAL_MS);
      timer.unref();
      watches.set(end, send);
      call.once('cancelled', end);
      call.once('close', end);
      check();
    },
  };

  return {
    handlers,
    /** The server is stopping: report NOT_SERVING to watchers and end their streams. */
    stopping(): void {
      stopping = true;
      for (const [end, send] of [...watches]) {
        send('NOT_SERVING');
        end();
      }
    },
  };
}
