/**
 * The TRE process: PKI material, revocation list, the mTLS MQTT broker and the flows wired to it.
 */
import {
  createCipheriv,
  createDecipheriv,
  createPrivateKey,
  createPublicKey,
  type KeyObject,
  randomBytes,
  X509Certificate,
} from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Tpm } from '@tre/hardware';
import { type Clock, systemClock } from '@tre/protocol';
import type { IdentityLimitOptions } from './access/identity-limits.js';
import { AttestationService } from './attestation/attestation-service.js';
import { APPLICATION_PCR, measuredContent, measureTre } from './attestation/measurement.js';
import { type BillingOptions, BillingService } from './billing/billing-service.js';
import { MessageRouter, type Outbound } from './broker/message-router.js';
import { TlsMqttBroker } from './broker/tls-mqtt-broker.js';
import {
  type DemandResponseOptions,
  DemandResponseService,
} from './demand-response/demand-response-service.js';
import { ReadingIngest } from './ingest/reading-ingest.js';
import type { Logger } from './log.js';
import { type MonitoringOptions, MonitoringService } from './monitoring/monitoring-service.js';
import { pkiPaths } from './pki/certificate-authority.js';
import { RevocationList } from './pki/revocation-list.js';
import { HouseholdRegistry } from './registry/household-registry.js';
import { Store } from './store/store.js';

export interface TreOptions {
  pkiDir: string;
  dataDir: string;
  host?: string;
  port?: number;
  log: Logger;
  revocationPollMs?: number;
  clock?: Clock;
  limits?: IdentityLimitOptions;
  handshakeTimeoutMs?: number;
  monitoring?: MonitoringOptions;
  billing?: BillingOptions;
  demandResponse?: DemandResponseOptions;
  /**
   * The TPM: measured start, attestation key, quotes (without it the TRE cannot be attested). The
   * AK certificate comes from `<data>/tpm/ak.crt` (enrolled with `tre enroll` and `tre pki
   * endorse-ak`) unless `akCertificate` enrolls in process (demo, tests). `bootPcrs`: on a machine
   * with measured boot, the PCRs its firmware and boot loader extend (e.g. 0-7); they are quoted
   * beside the application PCR and the TLS key is sealed to them too.
   */
  tpm?: { tcti: string; akCertificate?: (tpm: Tpm) => Promise<string>; bootPcrs?: number[] };
  /** What the TRE measures as its configuration (the regulator whitelists the same). */
  measuredConfig?: Record<string, unknown>;
}

/** What every flow of the TRE is built from. */
export interface TreContext {
  store: Store;
  registry: HouseholdRegistry;
  router: MessageRouter;
  /** Publishes from the TRE (broadcasts, provider topics); inbox replies go through `router.reply`. */
  outbound: Outbound;
  clock: Clock;
  log: Logger;
  /** The TRE's signing key (its TLS key): signs broadcasts, statements, bills, DR outcomes. */
  signingKey: KeyObject;
  /** PEM of the TRE's certificate and of the regulator root. */
  treCertificate: string;
  caCertificate: string;
}

export interface RunningTre {
  host: string;
  port: number;
  broker: TlsMqttBroker;
  router: MessageRouter;
  store: Store;
  registry: HouseholdRegistry;
  ingest: ReadingIngest;
  monitoring: MonitoringService;
  billing: BillingService;
  demandResponse: DemandResponseService;
  attestation?: { service: AttestationService; tpm: Tpm; akPublicKeyPem: string; pcr: string };
  context: TreContext;
  stop(): Promise<void>;
}

export class TreConfigError extends Error {
  override readonly name = 'TreConfigError';
  readonly code = 'TRE_CONFIG';
}

async function readPem(path: string, what: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch {
    throw new TreConfigError(
      `cannot read the ${what} at ${path}; create the PKI with \`tre pki init --dir <dir>\``,
    );
  }
}

/**
 * Measured start: what runs goes into the application PCR before anything is served. On the first
 * start the TLS private key is sealed to that PCR value; on every later start it must unseal, so a
 * TRE whose code, Node binary or configuration changed cannot use its identity and refuses to start.
 */
function measuredStart(
  tcti: string,
  dataDir: string,
  measuredConfig: Record<string, unknown>,
  plainKey: { pem: string | undefined; path: string },
  bootPcrs: number[],
): { tpm: Tpm; tlsKey: string; sealedNow: boolean } {
  const tpm = Tpm.open({ tcti, keystoreDir: join(dataDir, 'tpm') });
  // The application PCR starts from zero on every start (a restart needs no reboot); the boot PCRs
  // cannot be reset by software and carry what booted.
  tpm.pcrReset(APPLICATION_PCR);
  for (const m of measuredContent(measuredConfig))
    tpm.pcrExtend(APPLICATION_PCR, Buffer.from(m.contentDigest, 'hex'), m.description);
  tpm.createAk();
  // The TPM seals at most 128 bytes: it seals a random AES-256 key, which encrypts the TLS key.
  const sealedFile = join(dataDir, 'tpm', 'tls-key.enc');
  if (!existsSync(sealedFile)) {
    if (!plainKey.pem) {
      tpm.close();
      throw new TreConfigError(
        `no TLS key: ${plainKey.path} is missing and none is sealed in ${sealedFile}; put the TRE key there for the first start`,
      );
    }
    const kek = randomBytes(32);
    tpm.seal(SEALED_TLS_KEY, kek, [APPLICATION_PCR, ...bootPcrs]);
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', kek, iv);
    const encrypted = Buffer.concat([cipher.update(plainKey.pem, 'utf8'), cipher.final()]);
    writeFileSync(sealedFile, Buffer.concat([iv, cipher.getAuthTag(), encrypted]), { mode: 0o600 });
    return { tpm, tlsKey: plainKey.pem, sealedNow: true };
  }
  let tlsKey: string;
  try {
    const kek = tpm.unseal(SEALED_TLS_KEY);
    const blob = readFileSync(sealedFile);
    const decipher = createDecipheriv('aes-256-gcm', kek, blob.subarray(0, 12));
    decipher.setAuthTag(blob.subarray(12, 28));
    tlsKey = Buffer.concat([decipher.update(blob.subarray(28)), decipher.final()]).toString('utf8');
  } catch (err) {
    tpm.close();
    throw new TreConfigError(
      `this TRE's measurement (code, node binary, configuration or boot) differs from the one its TLS key was sealed to, so the key cannot be unsealed and the TRE refuses to start (${(err as Error).message}). If the change is approved: put the TRE key back at ${plainKey.path}, delete ${sealedFile} and start again to seal it to the new measurement; the regulator whitelists the new release with \`tre attest-policy\`.`,
    );
  }
  if (plainKey.pem && plainKey.pem !== tlsKey) {
    tpm.close();
    throw new TreConfigError(`${plainKey.path} is not the TLS key sealed in ${sealedFile}`);
  }
  return { tpm, tlsKey, sealedNow: false };
}

const SEALED_TLS_KEY = '/HS/SRK/tre-tls-key';

function bootPcrsOf(pcrs: number[] = []): number[] {
  for (const p of pcrs)
    if (!Number.isInteger(p) || p < 0 || p > 15)
      throw new TreConfigError(`boot PCR ${p}: boot PCRs are 0-15 (PCR ${APPLICATION_PCR} is the TRE's own)`);
  return [...new Set(pcrs)].sort((a, b) => a - b);
}

export async function startTre(opts: TreOptions): Promise<RunningTre> {
  const paths = pkiPaths(opts.pkiDir);
  // With a TPM the TLS key is sealed after the first start, and tre.key should leave the machine.
  const plainKey = await readFile(paths.treKey, 'utf8').catch(() => undefined);
  const tls = {
    key: plainKey ?? '',
    cert: await readPem(paths.treCert, 'TRE certificate'),
    ca: await readPem(paths.caCert, 'regulator CA certificate'),
  };
  await readPem(paths.crl, 'certificate revocation list');
  let tpm: Tpm | undefined;
  const bootPcrs = bootPcrsOf(opts.tpm?.bootPcrs);
  if (opts.tpm) {
    const measured = measuredStart(
      opts.tpm.tcti,
      opts.dataDir,
      opts.measuredConfig ?? {},
      { pem: plainKey, path: paths.treKey },
      bootPcrs,
    );
    tpm = measured.tpm;
    tls.key = measured.tlsKey;
    if (measured.sealedNow)
      opts.log.warn(
        { sealedIn: join(opts.dataDir, 'tpm', 'tls-key.enc') },
        `TLS key sealed to this measurement; remove ${paths.treKey} from this machine (keep it offline to re-seal after an approved update)`,
      );
  } else if (!plainKey) {
    await readPem(paths.treKey, 'TRE private key'); // throws the usual message
  }
  await mkdir(opts.dataDir, { recursive: true, mode: 0o700 });
  const revocations = await RevocationList.load(paths.crl, tls.ca);
  const clock = opts.clock ?? systemClock;
  const store = Store.openIn(opts.dataDir);
  const registry = new HouseholdRegistry(store);
  const broker = await TlsMqttBroker.start({
    admit: (who) => (who.role === 'meter' && !registry.get(who.id) ? 'meter not registered' : undefined),
    tls,
    revocations,
    host: opts.host ?? '127.0.0.1',
    port: opts.port ?? 8883,
    log: opts.log,
    revocationPollMs: opts.revocationPollMs,
    limits: opts.limits,
    handshakeTimeoutMs: opts.handshakeTimeoutMs,
  });
  const router = new MessageRouter(broker, opts.log.child({ module: 'router' }));
  broker.setRouter(router);
  registry.serve(router);
  const context: TreContext = {
    store,
    registry,
    router,
    outbound: broker,
    clock,
    log: opts.log,
    signingKey: createPrivateKey(tls.key),
    treCertificate: tls.cert,
    caCertificate: tls.ca,
  };
  const ingest = new ReadingIngest(store, registry, router, clock, opts.log.child({ module: 'ingest' }));
  // Flows are wired here, each from the context.
  const monitoring = new MonitoringService(context, opts.monitoring);
  const billing = new BillingService(context, ingest, opts.billing);
  let attestation: RunningTre['attestation'];
  if (tpm) {
    const akPublicKeyPem = tpm.publicKeyPem();
    const akCertificateFile = join(opts.dataDir, 'tpm', 'ak.crt');
    const akCertificate = opts.tpm?.akCertificate
      ? await opts.tpm.akCertificate(tpm)
      : await readFile(akCertificateFile, 'utf8').catch(() => {
          throw new TreConfigError(
            `no attestation-key certificate at ${akCertificateFile}: enroll this TPM's AK with the regulator (` +
              '`tre enroll request`, `tre pki endorse-ak challenge`, `tre enroll activate`, `tre pki endorse-ak certify`)',
          );
        });
    if (!createPublicKey(akPublicKeyPem).equals(new X509Certificate(akCertificate).publicKey))
      throw new TreConfigError(
        `${akCertificateFile} certifies another attestation key than this TPM's; enroll this TPM's AK`,
      );
    const quoted = [...bootPcrs, APPLICATION_PCR];
    const quotes = { quote: async (qd: Buffer) => tpm.quote(quoted, qd) };
    const service = new AttestationService(
      context,
      quotes,
      measureTre(opts.measuredConfig ?? {}),
      akCertificate,
    );
    attestation = { service, tpm, akPublicKeyPem, pcr: tpm.pcrRead(APPLICATION_PCR).toString('hex') };
  }
  const demandResponse = new DemandResponseService(context, {
    groupMembers: (dnoId, groupId) => monitoring.groups(dnoId).find((g) => g.groupId === groupId)?.meters,
    ...opts.demandResponse,
  });
  // Only now is every flow wired: the line that says where to connect comes last.
  const { address, port } = broker.address;
  opts.log.info({ host: address, port }, 'TRE listening (MQTT 3.1.1 over mutual TLS)');
  return {
    host: address,
    port,
    broker,
    router,
    store,
    registry,
    ingest,
    monitoring,
    billing,
    demandResponse,
    attestation,
    context,
    async stop() {
      monitoring.stop();
      billing.stop();
      demandResponse.stop();
      attestation?.tpm.close();
      await broker.close();
      store.close();
      opts.log.info('TRE stopped');
    },
  };
}
