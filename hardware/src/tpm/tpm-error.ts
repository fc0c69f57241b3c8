/** A TPM (or TSS) failure: the response code and its decoded meaning from libtss2-rc. */
export class TpmError extends Error {
  override readonly name = 'TpmError';
  constructor(
    readonly operation: string,
    readonly code: number,
    readonly text: string,
  ) {
    super(`${operation} failed: 0x${code.toString(16)} ${text}`);
  }
}
