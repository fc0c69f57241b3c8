/** A TRE that cannot start as configured: the message says what to do. */
export class TreConfigError extends Error {
  override readonly name = 'TreConfigError';
  readonly code = 'TRE_CONFIG';
}
