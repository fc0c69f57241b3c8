/**
 * The tpm2-tss functions the TRE uses, through koffi (FFI with prebuilt binaries; ffi-napi does not
 * build on Node 20). Runtime sonames only (`libtss2-fapi.so.1`, `libtss2-rc.so.0`, from Debian
 * `libtss2-dev`'s runtime packages), loaded on first use. FAPI takes and returns JSON, which keeps
 * this surface small; ESYS (on FAPI's own TPM connection) covers what FAPI lacks, credential
 * activation, with TPM structures passed as wire bytes through libtss2-mu rather than C layouts.
 */
import koffi from 'koffi';

// biome-ignore lint/suspicious/noExplicitAny: koffi's native function handles are untyped
type NativeFn = (...args: any[]) => any;
/**
 * A koffi function that can also run on a worker thread (`fn.async(...args, callback)`). koffi hands C
 * a Buffer's or typed array's own memory and keeps no reference to it: the caller keeps such arguments
 * referenced until the callback (Tpm.onWorker), else a garbage collection frees them under the call.
 */
export type AsyncNativeFn = NativeFn & { async: NativeFn };

export interface Tss2 {
  decode(rc: number): string;
  Fapi_Initialize: NativeFn;
  Fapi_Finalize: NativeFn;
  Fapi_Provision: NativeFn;
  Fapi_CreateKey: NativeFn;
  Fapi_Quote: AsyncNativeFn;
  Fapi_PcrRead: NativeFn;
  Fapi_PcrExtend: NativeFn;
  Fapi_ExportKey: NativeFn;
  Fapi_GetRandom: NativeFn;
  Fapi_Import: NativeFn;
  Fapi_CreateSeal: NativeFn;
  Fapi_Unseal: NativeFn;
  Fapi_Delete: NativeFn;
  Fapi_Free: NativeFn;
  Fapi_GetTpmBlobs: NativeFn;
  Fapi_GetEsysBlob: NativeFn;
  Fapi_GetTcti: NativeFn;
  Esys_Initialize: NativeFn;
  Esys_Finalize: NativeFn;
  Esys_ContextLoad: NativeFn;
  Esys_TR_Deserialize: NativeFn;
  Esys_StartAuthSession: NativeFn;
  Esys_PolicySecret: NativeFn;
  Esys_ActivateCredential: NativeFn;
  Esys_FlushContext: NativeFn;
  Esys_Free: NativeFn;
  Esys_TR_FromTPMPublic: NativeFn;
  Esys_PCR_Reset: NativeFn;
  Esys_PCR_Extend: NativeFn;
  Esys_TR_Close: NativeFn;
  Esys_NV_ReadPublic: NativeFn;
  Esys_NV_Read: NativeFn;
  /** Tss2_MU_TPM2B_NV_PUBLIC_Marshal: the C structure ESYS returned, as wire bytes. */
  marshalNvPublic(struct: unknown): Buffer;
  /** Tss2_MU_<type>_Unmarshal(buffer, size, &offset, dest): wire bytes into a C structure. */
  unmarshal(
    type: 'TPMS_CONTEXT' | 'TPM2B_ID_OBJECT' | 'TPM2B_ENCRYPTED_SECRET' | 'TPML_DIGEST_VALUES',
    wire: Buffer,
  ): Buffer;
  /** Reads a NUL-terminated string a FAPI call returned, then frees it. */
  takeString(ptr: unknown): string;
  /** Reads a TPM2B (native u16 size, then the bytes) an ESYS call returned, then frees it. */
  takeTpm2b(ptr: unknown): Buffer;
  /** Reads `size` bytes a FAPI call returned, then frees them. */
  takeBytes(ptr: unknown, size: number): Buffer;
}

let loaded: Tss2 | undefined;

export function tss2(): Tss2 {
  if (loaded) return loaded;
  const fapi = koffi.load('libtss2-fapi.so.1');
  const rc = koffi.load('libtss2-rc.so.0');
  const esys = koffi.load('libtss2-esys.so.0');
  const mu = koffi.load('libtss2-mu.so.0');
  koffi.opaque('FAPI_CONTEXT');
  koffi.opaque('ESYS_CONTEXT');
  koffi.opaque('TSS2_TCTI_CONTEXT');
  const marshalNv = mu.func(
    'uint32_t Tss2_MU_TPM2B_NV_PUBLIC_Marshal(const void *src, _Out_ uint8_t *buffer, size_t size, _Inout_ size_t *offset)',
  );
  const unmarshallers = Object.fromEntries(
    (['TPMS_CONTEXT', 'TPM2B_ID_OBJECT', 'TPM2B_ENCRYPTED_SECRET', 'TPML_DIGEST_VALUES'] as const).map(
      (t) => [
        t,
        mu.func(
          `uint32_t Tss2_MU_${t}_Unmarshal(const uint8_t *buffer, size_t size, _Inout_ size_t *offset, _Out_ uint8_t *dest)`,
        ),
      ],
    ),
  );
  const decode = rc.func('const char *Tss2_RC_Decode(uint32_t rc)');
  const Fapi_Free = fapi.func('void Fapi_Free(void *ptr)');
  const Esys_Free = esys.func('void Esys_Free(void *ptr)');
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
    Fapi_GetTpmBlobs: fapi.func(
      'uint32_t Fapi_GetTpmBlobs(FAPI_CONTEXT *context, const char *path, _Out_ void **tpm2bPublic, _Out_ size_t *tpm2bPublicSize, _Out_ void **tpm2bPrivate, _Out_ size_t *tpm2bPrivateSize, _Out_ void **policy)',
    ),
    Fapi_GetEsysBlob: fapi.func(
      'uint32_t Fapi_GetEsysBlob(FAPI_CONTEXT *context, const char *path, _Out_ uint8_t *type, _Out_ void **data, _Out_ size_t *length)',
    ),
    Fapi_GetTcti: fapi.func('uint32_t Fapi_GetTcti(FAPI_CONTEXT *context, _Out_ TSS2_TCTI_CONTEXT **tcti)'),
    Esys_Initialize: esys.func(
      'uint32_t Esys_Initialize(_Out_ ESYS_CONTEXT **context, TSS2_TCTI_CONTEXT *tcti, void *abiVersion)',
    ),
    Esys_Finalize: esys.func('void Esys_Finalize(_Inout_ ESYS_CONTEXT **context)'),
    Esys_ContextLoad: esys.func(
      'uint32_t Esys_ContextLoad(ESYS_CONTEXT *context, const uint8_t *tpmsContext, _Out_ uint32_t *loadedHandle)',
    ),
    Esys_TR_Deserialize: esys.func(
      'uint32_t Esys_TR_Deserialize(ESYS_CONTEXT *context, const uint8_t *buffer, size_t size, _Out_ uint32_t *handle)',
    ),
    Esys_StartAuthSession: esys.func(
      'uint32_t Esys_StartAuthSession(ESYS_CONTEXT *context, uint32_t tpmKey, uint32_t bind, uint32_t s1, uint32_t s2, uint32_t s3, const uint8_t *nonceCaller, uint8_t sessionType, const uint8_t *symmetric, uint16_t authHash, _Out_ uint32_t *session)',
    ),
    Esys_PolicySecret: esys.func(
      'uint32_t Esys_PolicySecret(ESYS_CONTEXT *context, uint32_t authHandle, uint32_t policySession, uint32_t s1, uint32_t s2, uint32_t s3, const uint8_t *nonceTPM, const uint8_t *cpHashA, const uint8_t *policyRef, int32_t expiration, _Out_ void **timeout, _Out_ void **policyTicket)',
    ),
    Esys_ActivateCredential: esys.func(
      'uint32_t Esys_ActivateCredential(ESYS_CONTEXT *context, uint32_t activateHandle, uint32_t keyHandle, uint32_t s1, uint32_t s2, uint32_t s3, const uint8_t *credentialBlob, const uint8_t *secret, _Out_ void **certInfo)',
    ),
    Esys_FlushContext: esys.func('uint32_t Esys_FlushContext(ESYS_CONTEXT *context, uint32_t handle)'),
    Esys_Free,
    Esys_PCR_Reset: esys.func(
      'uint32_t Esys_PCR_Reset(ESYS_CONTEXT *context, uint32_t pcrHandle, uint32_t s1, uint32_t s2, uint32_t s3)',
    ),
    Esys_PCR_Extend: esys.func(
      'uint32_t Esys_PCR_Extend(ESYS_CONTEXT *context, uint32_t pcrHandle, uint32_t s1, uint32_t s2, uint32_t s3, const uint8_t *digests)',
    ),
    Esys_TR_FromTPMPublic: esys.func(
      'uint32_t Esys_TR_FromTPMPublic(ESYS_CONTEXT *context, uint32_t tpmHandle, uint32_t s1, uint32_t s2, uint32_t s3, _Out_ uint32_t *handle)',
    ),
    Esys_TR_Close: esys.func('uint32_t Esys_TR_Close(ESYS_CONTEXT *context, _Inout_ uint32_t *handle)'),
    Esys_NV_ReadPublic: esys.func(
      'uint32_t Esys_NV_ReadPublic(ESYS_CONTEXT *context, uint32_t nvIndex, uint32_t s1, uint32_t s2, uint32_t s3, _Out_ void **nvPublic, _Out_ void **nvName)',
    ),
    Esys_NV_Read: esys.func(
      'uint32_t Esys_NV_Read(ESYS_CONTEXT *context, uint32_t authHandle, uint32_t nvIndex, uint32_t s1, uint32_t s2, uint32_t s3, uint16_t size, uint16_t offset, _Out_ void **data)',
    ),
    marshalNvPublic(struct) {
      const wire = Buffer.alloc(512);
      const offset = [0];
      const code = marshalNv(struct, wire, wire.length, offset) as number;
      if (code !== 0) throw new Error(`TPM2B_NV_PUBLIC: ${String(decode(code))}`);
      return wire.subarray(0, offset[0]);
    },
    unmarshal(type, wire) {
      // Large enough for any of these structures' C layout (TPMS_CONTEXT is the largest, ~5 KiB).
      const dest = Buffer.alloc(8192);
      const offset = [0];
      const code = unmarshallers[type]!(wire, wire.length, offset, dest) as number;
      if (code !== 0 || offset[0] !== wire.length)
        throw new Error(`${type}: malformed (${code ? String(decode(code)) : 'trailing bytes'})`);
      return dest;
    },
    takeTpm2b(ptr) {
      const size = koffi.decode(ptr, 'uint16_t') as number;
      const b = Buffer.from(koffi.decode(ptr, 2, 'uint8_t', size) as number[]);
      Esys_Free(ptr);
      return b;
    },
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
