/**
 * The tpm2-tss functions the TRE uses, through koffi (FFI with prebuilt binaries; ffi-napi does not
 * build on Node 20). Runtime sonames only (`libtss2-fapi.so.1`, `libtss2-rc.so.0`, from Debian
 * `libtss2-dev`'s runtime packages), loaded on first use. FAPI takes and returns JSON, which keeps
 * this surface small.
 */
import koffi from 'koffi';

// biome-ignore lint/suspicious/noExplicitAny: koffi's native function handles are untyped
type NativeFn = (...args: any[]) => any;

export interface Tss2 {
  decode(rc: number): string;
  Fapi_Initialize: NativeFn;
  Fapi_Finalize: NativeFn;
  Fapi_Provision: NativeFn;
  Fapi_CreateKey: NativeFn;
  Fapi_Quote: NativeFn;
  Fapi_PcrRead: NativeFn;
  Fapi_PcrExtend: NativeFn;
  Fapi_ExportKey: NativeFn;
  Fapi_GetRandom: NativeFn;
  Fapi_Import: NativeFn;
  Fapi_CreateSeal: NativeFn;
  Fapi_Unseal: NativeFn;
  Fapi_Delete: NativeFn;
  Fapi_Free: NativeFn;
  /** Reads a NUL-terminated string a FAPI call returned, then frees it. */
  takeString(ptr: unknown): string;
  /** Reads `size` bytes a FAPI call returned, then frees them. */
  takeBytes(ptr: unknown, size: number): Buffer;
}

let loaded: Tss2 | undefined;

export function tss2(): Tss2 {
  if (loaded) return loaded;
  const fapi = koffi.load('libtss2-fapi.so.1');
  const rc = koffi.load('libtss2-rc.so.0');
  koffi.opaque('FAPI_CONTEXT');
  const decode = rc.func('const char *Tss2_RC_Decode(uint32_t rc)');
  const Fapi_Free = fapi.func('void Fapi_Free(void *ptr)');
  loaded = {
    decode: (code: number) => String(decode(code)),
    Fapi_Initialize: fapi.func('uint32_t Fapi_Initialize(_Out_ FAPI_CONTEXT **context, const char *uri)'),
    Fapi_Finalize: fapi.func('void Fapi_Finalize(_Inout_ FAPI_CONTEXT **context)'),
    Fapi_Provision: fapi.func(
      'uint32_t Fapi_Provision(FAPI_CONTEXT *context, const char *authValueEh, const char *authValueSh, const char *authValueLockout)',
    ),
    Fapi_CreateKey: fapi.func(
      'uint32_t Fapi_CreateKey(FAPI_CONTEXT *context, const char *path, const char *type, const char *policyPath, const char *authValue)',
    ),
    Fapi_Quote: fapi.func(
      'uint32_t Fapi_Quote(FAPI_CONTEXT *context, uint32_t *pcrList, size_t pcrListSize, const char *keyPath, const char *quoteType, const uint8_t *qualifyingData, size_t qualifyingDataSize, _Out_ void **quoteInfo, _Out_ void **signature, _Out_ size_t *signatureSize, _Out_ void **pcrLog, _Out_ void **certificate)',
    ),
    Fapi_PcrRead: fapi.func(
      'uint32_t Fapi_PcrRead(FAPI_CONTEXT *context, uint32_t pcrIndex, _Out_ void **pcrValue, _Out_ size_t *pcrValueSize, _Out_ void **pcrLog)',
    ),
    Fapi_PcrExtend: fapi.func(
      'uint32_t Fapi_PcrExtend(FAPI_CONTEXT *context, uint32_t pcr, const uint8_t *data, size_t dataSize, const char *logData)',
    ),
    Fapi_ExportKey: fapi.func(
      'uint32_t Fapi_ExportKey(FAPI_CONTEXT *context, const char *pathOfKeyToDuplicate, const char *pathToPublicKeyOfNewParent, _Out_ void **exportedData)',
    ),
    Fapi_GetRandom: fapi.func(
      'uint32_t Fapi_GetRandom(FAPI_CONTEXT *context, size_t numBytes, _Out_ void **data)',
    ),
    Fapi_Import: fapi.func(
      'uint32_t Fapi_Import(FAPI_CONTEXT *context, const char *path, const char *importData)',
    ),
    Fapi_CreateSeal: fapi.func(
      'uint32_t Fapi_CreateSeal(FAPI_CONTEXT *context, const char *path, const char *type, size_t size, const char *policyPath, const char *authValue, const uint8_t *data)',
    ),
    Fapi_Unseal: fapi.func(
      'uint32_t Fapi_Unseal(FAPI_CONTEXT *context, const char *path, _Out_ void **data, _Out_ size_t *size)',
    ),
    Fapi_Delete: fapi.func('uint32_t Fapi_Delete(FAPI_CONTEXT *context, const char *path)'),
    Fapi_Free,
    takeString(ptr) {
      if (!ptr) return '';
      const s = koffi.decode(ptr, 'char', -1) as string;
      Fapi_Free(ptr);
      return s;
    },
    takeBytes(ptr, size) {
      if (!ptr) return Buffer.alloc(0);
      const b = Buffer.from(koffi.decode(ptr, 'uint8_t', size) as number[]);
      Fapi_Free(ptr);
      return b;
    },
  };
  return loaded;
}
