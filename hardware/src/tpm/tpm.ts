/**
 * The TPM 2.0 as the TRE uses it, through tpm2-tss FAPI: an ECC P-256 restricted signing
 * attestation key (AK) under the storage root, quotes over the application PCRs with caller-chosen
 * qualifying data, PCR read/extend, random bytes. The TCTI decides which TPM: `device:/dev/tpmrm0`
 * on a Pi with a TPM HAT, `swtpm:host=127.0.0.1,port=N` for the software TPM — same code path.
 * Quotes are returned as the raw TPMS_ATTEST bytes the TPM signed (re-encoded from FAPI's JSON,
 * checked against the signature by the callers' verifier) and a DER ECDSA signature.
 */

import { X509Certificate } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { TpmError } from './tpm-error.js';
import { type AsyncNativeFn, type Tss2, tss2 } from './tss2-ffi.js';

const TPM_GENERATED_VALUE = 0xff544347;
const ESYS_TR_NONE = 0xfff;
const ESYS_TR_PASSWORD = 0x0ff;
const ESYS_TR_RH_ENDORSEMENT = 0x10b;
const TPM2_SE_POLICY = 0x01;
const TPM2_ALG_NULL = 0x0010;
const TPM2_ALG_SHA256 = 0x000b;
const ESYS_TR_RH_OWNER = 0x101;
const TRANSIENT_FIRST = 0x80000000;
const FAPI_ESYSBLOB_CONTEXTLOAD = 1;
/** TCG EK Credential Profile: the NV index of the ECC NIST P-256 EK certificate (DER). */
const EK_CERT_NV_INDEX_ECC_P256 = 0x01c0000a;
const NV_CHUNK = 512;
const TPM_ST_ATTEST_QUOTE = 0x8018;
const HASH_ALG: Record<string, number> = { SHA1: 0x0004, SHA256: 0x000b, SHA384: 0x000c, SHA512: 0x000d };
/** PC Client TPMs have 24 PCRs (FAPI's profiles select 0-23). */
const MAX_PCR = 23;
/** TPM2B_DATA: at most the largest digest, SHA-512. */
const MAX_QUALIFYING_DATA = 64;

export interface TpmOptions {
  /** e.g. `device:/dev/tpmrm0` or `swtpm:host=127.0.0.1,port=2321`. */
  tcti: string;
  /** FAPI key store and logs (the TRE's data directory). */
  keystoreDir: string;
}

export interface Quote {
  attest: Buffer;
  signature: Buffer;
  pcrs: { index: number; sha256: string }[];
}

interface QuoteInfo {
  attest: {
    magic: string;
    type: string;
    qualifiedSigner: string;
    extraData: string;
    clockInfo: { clock: number; resetCount: number; restartCount: number; safe: string };
    firmwareVersion: [number, number];
    attested: { pcrSelect: { hash: string; pcrSelect: number[] }[]; pcrDigest: string };
  };
}

function u(n: number, bytes: number): Buffer {
  const b = Buffer.alloc(bytes);
  b.writeUIntBE(n, 0, bytes);
  return b;
}

/** The SHA-256 PCRs FAPI's JSON rendering of a quote says the TPM quoted, ascending. */
function quotedSha256Pcrs(json: string): number[] {
  const selections = (JSON.parse(json) as QuoteInfo).attest.attested.pcrSelect;
  return selections
    .filter((s) => s.hash === 'SHA256')
    .flatMap((s) => s.pcrSelect)
    .sort((a, b) => a - b);
}

/** TPMS_ATTEST bytes from FAPI's JSON rendering of a quote. */
export function attestFromQuoteInfo(json: string): Buffer {
  const a = (JSON.parse(json) as QuoteInfo).attest;
  if (a.magic !== 'VALUE' || a.type !== 'ATTEST_QUOTE') throw new Error('not a TPM-generated quote');
  const signer = Buffer.from(a.qualifiedSigner, 'hex');
  const extra = Buffer.from(a.extraData, 'hex');
  const clock = Buffer.alloc(8);
  clock.writeBigUInt64BE(BigInt(a.clockInfo.clock));
  const fw = Buffer.alloc(8);
  fw.writeUInt32BE(a.firmwareVersion[0] >>> 0, 0);
  fw.writeUInt32BE(a.firmwareVersion[1] >>> 0, 4);
  const selections = a.attested.pcrSelect.map((s) => {
    const bitmap = Buffer.alloc(3);
    for (const p of s.pcrSelect) bitmap[p >> 3]! |= 1 << (p & 7);
    const alg = HASH_ALG[s.hash];
    if (alg === undefined) throw new Error(`unknown PCR bank ${s.hash}`);
    return Buffer.concat([u(alg, 2), u(3, 1), bitmap]);
  });
  const digest = Buffer.from(a.attested.pcrDigest, 'hex');
  return Buffer.concat([
    u(TPM_GENERATED_VALUE, 4),
    u(TPM_ST_ATTEST_QUOTE, 2),
    u(signer.length, 2),
    signer,
    u(extra.length, 2),
    extra,
    clock,
    u(a.clockInfo.resetCount >>> 0, 4),
    u(a.clockInfo.restartCount >>> 0, 4),
    u(a.clockInfo.safe === 'YES' ? 1 : 0, 1),
    fw,
    u(selections.length, 4),
    ...selections,
    u(digest.length, 2),
    digest,
  ]);
}

export class Tpm {
  /** The operation running on koffi's worker thread: FAPI contexts are not thread-safe. */
  private inFlight: string | undefined;
  /** The arguments of that operation, referenced until it returned (see `onWorker`). */
  private readonly pinned = new Set<unknown[]>();

  private constructor(
    private readonly lib: Tss2,
    private fapi: unknown,
  ) {}

  /** The FAPI context, for one call at a time: a call while an asynchronous quote runs is a bug. */
  private get context(): unknown {
    if (this.inFlight)
      throw new Error(`the TPM is busy with ${this.inFlight}: await it before the next TPM call`);
    return this.fapi;
  }

  /** Opens the TPM behind `tcti`, provisioning the FAPI key store in `keystoreDir` on first use. */
  static open(opts: TpmOptions): Tpm {
    const lib = tss2();
    // FAPI fails with an IO error on relative key store paths (e.g. `--data ./tre-data`).
    const keystoreDir = resolve(opts.keystoreDir);
    for (const d of ['user', 'system', 'log'])
      mkdirSync(join(keystoreDir, d), { recursive: true, mode: 0o700 });
    const config = join(keystoreDir, 'fapi-config.json');
    writeFileSync(
      config,
      JSON.stringify({
        profile_name: 'P_ECCP256SHA256',
        profile_dir: '/etc/tpm2-tss/fapi-profiles/',
        user_dir: join(keystoreDir, 'user'),
        system_dir: join(keystoreDir, 'system'),
        log_dir: join(keystoreDir, 'log'),
        tcti: opts.tcti,
        system_pcrs: [],
        // swtpm has no EK certificate unless swtpm_setup --create-ek-cert made one; enrollment checks the EK itself.
        ek_cert_less: 'yes',
      }),
    );
    process.env.TSS2_FAPICONF = config;
    process.env.TSS2_LOG ??= 'all+NONE';
    const ctx: unknown[] = [null];
    Tpm.check(lib, 'Fapi_Initialize', lib.Fapi_Initialize(ctx, null));
    const tpm = new Tpm(lib, ctx[0]);
    const rc = lib.Fapi_Provision(tpm.context, null, null, null);
    if (rc !== 0 && !/provision|exist/i.test(lib.decode(rc))) Tpm.check(lib, 'Fapi_Provision', rc);
    return tpm;
  }

  private static check(lib: Tss2, operation: string, rc: number): void {
    if (rc !== 0) throw new TpmError(operation, rc, lib.decode(rc));
  }

  private check(operation: string, rc: number): void {
    Tpm.check(this.lib, operation, rc);
  }

  getRandom(n: number): Buffer {
    const out: unknown[] = [null];
    this.check('Fapi_GetRandom', this.lib.Fapi_GetRandom(this.context, n, out));
    return this.lib.takeBytes(out[0], n);
  }

  /** Creates the attestation key (sign, restricted, no dictionary-attack lockout) unless it exists. */
  createAk(path = '/HS/SRK/AK'): void {
    const rc = this.lib.Fapi_CreateKey(this.context, path, 'sign,restricted,noDa', '', null);
    if (rc !== 0 && !/exist/i.test(this.lib.decode(rc))) this.check('Fapi_CreateKey', rc);
  }

  /** The AK's public key, PEM (SubjectPublicKeyInfo). */
  publicKeyPem(path = '/HS/SRK/AK'): string {
    const out: unknown[] = [null];
    this.check('Fapi_ExportKey', this.lib.Fapi_ExportKey(this.context, path, null, out));
    return (JSON.parse(this.lib.takeString(out[0])) as { pem_ext_public: string }).pem_ext_public;
  }

  pcrRead(index: number): Buffer {
    const value: unknown[] = [null];
    const size = [0];
    const log: unknown[] = [null];
    this.check('Fapi_PcrRead', this.lib.Fapi_PcrRead(this.context, index, value, size, log));
    this.lib.takeString(log[0]);
    return this.lib.takeBytes(value[0], size[0]!);
  }

  /**
   * Resets a PCR the platform lets software reset (PC Client: 16 and 23 at locality 0), so a
   * restarted application measures itself from zero without a reboot. Boot PCRs cannot be reset.
   */
  pcrReset(index: number): void {
    this.withEsys((esys) =>
      this.check(
        'Esys_PCR_Reset',
        this.lib.Esys_PCR_Reset(esys, index, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE),
      ),
    );
  }

  /**
   * Extends `index` with each SHA-256 digest, in order, in one session (TPM2_PCR_Extend of the
   * SHA-256 bank; no FAPI event log, whose per-event rewrite makes hundreds of events slow): the
   * caller keeps its own event log. Same PCR value as `pcrExtend(index, data)` with digest SHA-256(data).
   */
  pcrExtendDigests(index: number, digests: Buffer[]): void {
    this.withEsys((esys) => {
      for (const digest of digests) {
        if (digest.length !== 32) throw new RangeError('a SHA-256 digest is 32 bytes');
        const wire = Buffer.concat([u(1, 4), u(TPM2_ALG_SHA256, 2), digest]); // TPML_DIGEST_VALUES
        this.check(
          'Esys_PCR_Extend',
          this.lib.Esys_PCR_Extend(
            esys,
            index,
            ESYS_TR_PASSWORD,
            ESYS_TR_NONE,
            ESYS_TR_NONE,
            this.lib.unmarshal('TPML_DIGEST_VALUES', wire),
          ),
        );
      }
    });
  }

  /** Extends `index` with the event `data` (FAPI extends SHA-256(data)) and logs `description`. */
  pcrExtend(index: number, data: Buffer, description: string): void {
    this.check(
      'Fapi_PcrExtend',
      this.lib.Fapi_PcrExtend(this.context, index, data, data.length, JSON.stringify({ description })),
    );
  }

  async quote(pcrs: number[], qualifyingData: Buffer, path = '/HS/SRK/AK'): Promise<Quote> {
    if (pcrs.length === 0) throw new RangeError('a quote covers at least one PCR');
    for (const pcr of pcrs)
      if (!Number.isInteger(pcr) || pcr < 0 || pcr > MAX_PCR)
        throw new RangeError(`PCR ${pcr}: the TPM's PCRs are 0-${MAX_PCR}`);
    if (qualifyingData.length > MAX_QUALIFYING_DATA)
      throw new RangeError(
        `qualifying data of ${qualifyingData.length} bytes: at most ${MAX_QUALIFYING_DATA} (TPM2B_DATA)`,
      );
    const info: unknown[] = [null];
    const sig: unknown[] = [null];
    const sigSize = [0];
    const log: unknown[] = [null];
    const cert: unknown[] = [null];
    // On a worker thread: a hardware TPM takes tens to hundreds of milliseconds per quote, which
    // would otherwise stall every connection of the TRE. Our own copies of the inputs, pinned for
    // the call (see onWorker): the caller may reuse its buffer before the worker runs.
    const rc = await this.onWorker('Fapi_Quote', this.lib.Fapi_Quote, [
      new Uint32Array(pcrs),
      pcrs.length,
      path,
      'TPM-Quote',
      Buffer.from(qualifyingData),
      qualifyingData.length,
      info,
      sig,
      sigSize,
      log,
      cert,
    ]);
    this.check('Fapi_Quote', rc);
    const quoteInfo = this.lib.takeString(info[0]);
    const signature = this.lib.takeBytes(sig[0], sigSize[0]!);
    this.lib.takeString(log[0]);
    this.lib.takeString(cert[0]);
    const sorted = [...new Set(pcrs)].sort((a, b) => a - b);
    const quoted = quotedSha256Pcrs(quoteInfo);
    // What the TPM signed must be what was asked for: a quote over other PCRs is refused by every verifier.
    if (quoted.join(',') !== sorted.join(','))
      throw new Error(`Fapi_Quote quoted PCRs ${quoted.join(',')}, not the requested ${sorted.join(',')}`);
    return {
      attest: attestFromQuoteInfo(quoteInfo),
      signature,
      pcrs: sorted.map((index) => ({ index, sha256: this.pcrRead(index).toString('hex') })),
    };
  }

  /**
   * Runs `fn(context, ...args)` on koffi's worker thread, the TPM busy meanwhile. koffi passes C
   * the memory of a Buffer or typed array argument itself and keeps no reference to it, so `args`
   * stay referenced here until the call returned: the call waits in libuv's queue behind file I/O,
   * async crypto and DNS (four threads), and a garbage collection meanwhile freed an argument
   * nothing else referenced (the PCR list), so that FAPI read freed memory: it quoted other PCRs
   * or failed with 0x6000b (TSS2_FAPI_RC_BAD_VALUE, no PCR of its profile selected).
   */
  private async onWorker(operation: string, fn: AsyncNativeFn, args: unknown[]): Promise<number> {
    const context = this.context;
    this.inFlight = operation;
    this.pinned.add(args);
    try {
      return await new Promise<number>((resolve, reject) =>
        fn.async(context, ...args, (err: unknown, result: number) => (err ? reject(err) : resolve(result))),
      );
    } finally {
      this.inFlight = undefined;
      this.pinned.delete(args);
    }
  }

  /**
   * Seals `secret` (e.g. the key that wraps the TRE's TLS and data keys) to the current values of
   * `pcrs`, or to the values given in `expected` for those it lists (to migrate to a measurement
   * the regulator approved): only a TPM whose PCRs hold these values can unseal it.
   */
  seal(path: string, secret: Buffer, pcrs: number[], expected: Record<number, Buffer> = {}): void {
    const policyPath = `/policy/pcr-${path.replace(/[^A-Za-z0-9]/g, '-')}`;
    const digestOf = (pcr: number) => (expected[pcr] ?? this.pcrRead(pcr)).toString('hex');
    const policy = {
      description: `sealed to PCRs ${pcrs.join(',')}`,
      // One PolicyPCR per PCR, all of which must hold (tpm2-tss 3.2's FAPI corrupts its heap on a
      // single PolicyPCR listing several PCRs).
      policy: pcrs.map((pcr) => ({
        type: 'POLICYPCR',
        pcrs: [{ pcr, hashAlg: 'TPM2_ALG_SHA256', digest: digestOf(pcr) }],
      })),
    };
    this.lib.Fapi_Delete(this.context, policyPath);
    this.check('Fapi_Import', this.lib.Fapi_Import(this.context, policyPath, JSON.stringify(policy)));
    this.lib.Fapi_Delete(this.context, path);
    this.check(
      'Fapi_CreateSeal',
      this.lib.Fapi_CreateSeal(this.context, path, 'noDa', secret.length, policyPath, '', secret),
    );
  }

  /** Unseals; a TpmError (policy check failed) when the PCRs no longer match. */
  unseal(path: string): Buffer {
    const data: unknown[] = [null];
    const size = [0];
    const rc = this.lib.Fapi_Unseal(this.context, path, data, size);
    if (rc !== 0) this.flushTransientObjects(); // FAPI leaves the SRK and the sealed object loaded when the policy fails
    this.check('Fapi_Unseal', rc);
    return this.lib.takeBytes(data[0], size[0]!);
  }

  /**
   * What the regulator needs to enroll this TPM's AK: the marshalled TPM2B_PUBLIC of the EK and of
   * the AK, and the EK certificate (PEM) where the TPM's manufacturer provisioned one.
   */
  enrollmentKeys(akPath = '/HS/SRK/AK'): {
    ekPublic: Buffer;
    akPublic: Buffer;
    ekCertificate: string | null;
  } {
    const der = this.withEsys((esys) => this.readNv(esys, EK_CERT_NV_INDEX_ECC_P256));
    return {
      ekPublic: this.tpmPublic('/HE/EK'),
      akPublic: this.tpmPublic(akPath),
      ekCertificate: der ? new X509Certificate(der).toString() : null,
    };
  }

  /** An ESYS context on FAPI's own TPM connection, for what FAPI lacks; finalised after `use`. */
  private withEsys<T>(use: (esys: unknown) => T): T {
    const tcti: unknown[] = [null];
    this.check('Fapi_GetTcti', this.lib.Fapi_GetTcti(this.context, tcti));
    const esys: unknown[] = [null];
    this.check('Esys_Initialize', this.lib.Esys_Initialize(esys, tcti[0], null));
    try {
      return use(esys[0]);
    } finally {
      this.lib.Esys_Finalize(esys);
    }
  }

  /**
   * The contents of an NV index (e.g. the manufacturer's EK certificate), or null where the TPM has
   * no such index. Read with the index's own (empty) authorisation, else the owner's.
   */
  private readNv(esys: unknown, index: number): Buffer | null {
    const lib = this.lib;
    const none = ESYS_TR_NONE;
    const handle = [0];
    if (lib.Esys_TR_FromTPMPublic(esys, index, none, none, none, handle) !== 0) return null;
    try {
      const nvPublic: unknown[] = [null];
      const nvName: unknown[] = [null];
      this.check(
        'Esys_NV_ReadPublic',
        lib.Esys_NV_ReadPublic(esys, handle[0], none, none, none, nvPublic, nvName),
      );
      const wire = lib.marshalNvPublic(nvPublic[0]);
      lib.Esys_Free(nvPublic[0]);
      lib.Esys_Free(nvName[0]);
      // TPM2B_NV_PUBLIC: size, nvIndex (4), nameAlg (2), attributes (4), authPolicy (TPM2B), dataSize (2).
      const dataSize = wire.readUInt16BE(14 + wire.readUInt16BE(12));
      const chunks: Buffer[] = [];
      for (let offset = 0; offset < dataSize; ) {
        const want = Math.min(NV_CHUNK, dataSize - offset);
        const data: unknown[] = [null];
        const read = (auth: number) =>
          lib.Esys_NV_Read(esys, auth, handle[0], ESYS_TR_PASSWORD, none, none, want, offset, data) as number;
        const rc = read(handle[0]!);
        this.check('Esys_NV_Read', rc === 0 ? rc : read(ESYS_TR_RH_OWNER));
        const chunk = lib.takeTpm2b(data[0]);
        chunks.push(chunk);
        if (chunk.length === 0) break;
        offset += chunk.length;
      }
      return Buffer.concat(chunks);
    } finally {
      lib.Esys_TR_Close(esys, handle);
    }
  }

  private tpmPublic(path: string): Buffer {
    const pub: unknown[] = [null];
    const pubSize = [0];
    const priv: unknown[] = [null];
    const privSize = [0];
    const policy: unknown[] = [null];
    this.check(
      'Fapi_GetTpmBlobs',
      this.lib.Fapi_GetTpmBlobs(this.context, path, pub, pubSize, priv, privSize, policy),
    );
    this.lib.takeBytes(priv[0], privSize[0]!);
    this.lib.takeString(policy[0]);
    return this.lib.takeBytes(pub[0], pubSize[0]!);
  }

  /**
   * TPM2_ActivateCredential with the AK and the EK (authorised by the EK's standard policy,
   * PolicySecret of the endorsement hierarchy): recovers the secret the regulator wrapped with
   * MakeCredential for this EK and the AK's Name. Fails (a TpmError) on any other TPM or key.
   */
  activateCredential(credentialBlob: Buffer, encryptedSecret: Buffer, akPath = '/HS/SRK/AK'): Buffer {
    const lib = this.lib;
    const blob = lib.unmarshal('TPM2B_ID_OBJECT', credentialBlob);
    const secret = lib.unmarshal('TPM2B_ENCRYPTED_SECRET', encryptedSecret);
    return this.withEsys((esys) => {
      const transient: number[] = [];
      try {
        const ak = this.esysHandle(esys, akPath, transient);
        const ek = this.esysHandle(esys, '/HE/EK', transient);
        const session = [0];
        const symNull = Buffer.alloc(6);
        symNull.writeUInt16LE(TPM2_ALG_NULL);
        this.check(
          'Esys_StartAuthSession',
          lib.Esys_StartAuthSession(
            esys,
            ESYS_TR_NONE,
            ESYS_TR_NONE,
            ESYS_TR_NONE,
            ESYS_TR_NONE,
            ESYS_TR_NONE,
            null,
            TPM2_SE_POLICY,
            symNull,
            TPM2_ALG_SHA256,
            session,
          ),
        );
        transient.push(session[0]!);
        this.check(
          'Esys_PolicySecret',
          lib.Esys_PolicySecret(
            esys,
            ESYS_TR_RH_ENDORSEMENT,
            session[0],
            ESYS_TR_PASSWORD,
            ESYS_TR_NONE,
            ESYS_TR_NONE,
            null,
            null,
            null,
            0,
            null,
            null,
          ),
        );
        const certInfo: unknown[] = [null];
        this.check(
          'Esys_ActivateCredential',
          lib.Esys_ActivateCredential(
            esys,
            ak,
            ek,
            ESYS_TR_PASSWORD,
            session[0],
            ESYS_TR_NONE,
            blob,
            secret,
            certInfo,
          ),
        );
        return lib.takeTpm2b(certInfo[0]); // TPM2B_DIGEST
      } finally {
        for (const handle of transient) lib.Esys_FlushContext(esys, handle);
      }
    });
  }

  /**
   * Flushes transient objects FAPI left loaded after a failed command (a TPM has only a few slots;
   * without a resource manager, e.g. swtpm, they would stay until the TPM restarts).
   */
  private flushTransientObjects(): void {
    this.withEsys((esys) => {
      for (let tpmHandle = TRANSIENT_FIRST; tpmHandle < TRANSIENT_FIRST + 8; tpmHandle++) {
        const handle = [0];
        if (
          this.lib.Esys_TR_FromTPMPublic(
            esys,
            tpmHandle,
            ESYS_TR_NONE,
            ESYS_TR_NONE,
            ESYS_TR_NONE,
            handle,
          ) === 0
        )
          this.lib.Esys_FlushContext(esys, handle[0]);
      }
    });
  }

  /** An ESYS handle for a FAPI key: its saved context loaded (and noted for flushing), or its persistent handle. */
  private esysHandle(esys: unknown, path: string, transient: number[]): number {
    const type = [0];
    const data: unknown[] = [null];
    const length = [0];
    this.check('Fapi_GetEsysBlob', this.lib.Fapi_GetEsysBlob(this.context, path, type, data, length));
    const blob = this.lib.takeBytes(data[0], length[0]!);
    const handle = [0];
    if (type[0] === FAPI_ESYSBLOB_CONTEXTLOAD) {
      this.check(
        'Esys_ContextLoad',
        this.lib.Esys_ContextLoad(esys, this.lib.unmarshal('TPMS_CONTEXT', blob), handle),
      );
      transient.push(handle[0]!);
    } else {
      this.check('Esys_TR_Deserialize', this.lib.Esys_TR_Deserialize(esys, blob, blob.length, handle));
    }
    return handle[0]!;
  }

  close(): void {
    if (!this.fapi) return;
    this.lib.Fapi_Finalize([this.context]);
    this.fapi = undefined;
  }
}
