/** What `tre cluster` (dev-cluster.ts) refuses or fails with, by code. */
export class DevClusterError extends Error {
  override readonly name = 'DevClusterError';
  constructor(
    readonly code:
      | 'INVALID_ARGUMENT'
      | 'SWTPM_FAILED'
      | 'KEYS_SEALED_TO_ANOTHER_BUILD'
      | 'REBUILT_DURING_START'
      | 'SHARD_EXITED'
      | 'SHARD_NOT_READY'
      | 'ABORTED',
    message: string,
  ) {
    super(message);
  }
}
