/** The TypeScript SDK: a typed client of Tracker's public REST API. */
export {
  LockHeldError,
  type LockInfo,
  LockLostError,
  LockNotFoundError,
  LockNotHeldError,
  PermissionDeniedError,
  RateLimitedError,
  ServerUnreachableError,
  StoreUnavailableError,
  TrackerApiError,
  UnauthenticatedError,
  WaitTimeoutError,
} from './errors.js';
export {
  type AcquireOptions,
  type Duration,
  type HistoryOptions,
  type HistoryPage,
  type ListOptions,
  type LockEvent,
  type LockEventType,
  type LockList,
  type QueueInfo,
  TrackerClient,
  type TrackerClientOptions,
} from './tracker-client.js';
