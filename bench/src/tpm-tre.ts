/**
 * A TRE as its own process on a software TPM, enrolled the way the README's "With a TPM" path does
 * it: the attestation key certified by the regulator after credential activation, the TLS and data
 * keys born sealed to the measurement of `tre start` (`tre enroll tls`, run with the same Node flags
 * and options, because both are measured), the regulator's whitelist of that measurement (`tre
 * attest-policy`), and the households registered over MQTT as the regulator's signed registry
 * update (a sealed store cannot be written from outside the TRE). The TRE runs from a snapshot of
 * its release taken first, as a deployed TRE would: a rebuild of the tree during a long run would
 * otherwise change what it measures, and it would rightly refuse to start again.
 */
import { execFile } from 'node:child_process';
import { createDecipheriv, createPrivateKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { access, copyFile, readFile, writeFile } from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';
import { promisify } from 'node:util';
import { type Swtpm, startSwtpm, Tpm } from '@tre/hardware';
import { type Household, PROTOCOL_VERSION, signContent, topics } from '@tre/protocol';
import {
  type CertificateAuthority,
  copyRelease,
  endorseAk,
  productionPackages,
  ReadingStore,
  Store,
  sealedFiles,
} from '@tre/tre-broker';
import { connect, spawnTre, treCli, treExecArgv } from './load.js';

const run = promisify(execFile);

/** The options `tre start` gets besides `--pki/--data/--port`; measured, so enrollment and whitelist get them too. */
const MEASURED_ARGS = ['--log-level', 'warn'];

export interface AttestedTre {
  swtpm: Swtpm;
  /** The TRE's own certificate directory (tre.crt, ca.crt, crl.pem; its key exists only sealed). */
  pkiDir: string;
  dataDir: string;
  /** The regulator-signed whitelist of this TRE's measurement (JWS), as agents load it. */
  policyJws: string;
  /** Starts `tre start --tpm` on `port` (the same data directory and TPM every time). */
  start(port: number): ReturnType<typeof spawnTre>;
  /**
   * In-bounds readings in the TRE's store, read after the TRE has stopped: the store's data key is
   * unsealed by the TPM while PCR 23 still holds the stopped TRE's measurement.
   */
  countStoredReadings(): Promise<number>;
}

/**
 * A snapshot of the TRE's release (what it measures: each workspace's package.json, bin/ and
 * dist/, and every production dependency) under `to`, so that a rebuild of the tree during a long
 * run does not change the TRE's measurement between its enrollment and its restart (it would
 * rightly refuse to unseal its keys). Returns the snapshot's CLI.
 */
async function snapshotRelease(to: string): Promise<string> {
  await copyRelease(to);
  const { base } = productionPackages();
  const cli = join(to, relative(base, dirname(dirname(treCli))), 'dist', 'cli.js');
  await access(cli);
  return cli;
}

/** `tre <args>` with the Node flags the TRE runs with; rejects with its output. */
async function tre(cli: string, args: string[], profileDir?: string): Promise<string> {
  const r = await run(process.execPath, [...treExecArgv(profileDir), cli, ...args]).catch(
    (err: Error & { stderr?: string; stdout?: string }) => {
      throw new Error(`tre ${args.slice(0, 2).join(' ')} failed: ${err.stderr || err.stdout || err.message}`);
    },
  );
  return r.stdout;
}

export async function provisionAttestedTre(
  ca: CertificateAuthority,
  dir: string,
  opts: { profileDir?: string; startTimeoutMs?: number } = {},
): Promise<AttestedTre> {
  const cli = await snapshotRelease(join(dir, 'release'));
  const swtpm = await startSwtpm({ dir: join(dir, 'swtpm') });
  try {
    const dataDir = join(dir, 'tre-data');
    const pkiDir = join(dir, 'tre-pki');
    const tcti = swtpm.tcti;
    // The AK: request, challenge (swtpm has no EK certificate), activation, certificate.
    const tpm = Tpm.open({ tcti, keystoreDir: join(dataDir, 'tpm') });
    try {
      const akCertificate = await endorseAk(tpm, ca, 'tre', { allowUncertifiedEk: true });
      await writeFile(join(dataDir, 'tpm', 'ak.crt'), akCertificate);
    } finally {
      tpm.close();
    }
    // One at a time: swtpm serves one TPM connection at a time.
    const csr = join(dir, 'tre.csr');
    await tre(
      cli,
      ['enroll', 'tls', '--tpm', tcti, '--data', dataDir, '--pki', pkiDir, '--csr', csr, ...MEASURED_ARGS],
      opts.profileDir,
    );
    await writeFile(join(pkiDir, 'tre.crt'), await ca.signRequest(await readFile(csr, 'utf8'), 'tre', 'tre'));
    await copyFile(ca.paths.caCert, join(pkiDir, 'ca.crt'));
    await copyFile(ca.paths.crl, join(pkiDir, 'crl.pem'));
    const policyFile = join(dir, 'policy.jws');
    await tre(
      cli,
      ['attest-policy', '--pki', ca.dir, '--tpm', tcti, '--out', policyFile, ...MEASURED_ARGS],
      opts.profileDir,
    );
    const policyJws = await readFile(policyFile, 'utf8');
    return {
      swtpm,
      pkiDir,
      dataDir,
      policyJws,
      start: (port) =>
        spawnTre(pkiDir, dataDir, port, opts.profileDir, {
          args: ['--tpm', tcti],
          timeoutMs: opts.startTimeoutMs ?? 120_000,
          cli,
        }).catch((err: Error) => {
          throw /measurement .* differs/.test(err.message)
            ? new Error(
                `${err.message} (the TRE runs from a snapshot of its release made at enrollment: did its Node binary, a shared library or the TPM change during the run?)`,
              )
            : err;
        }),
      countStoredReadings: async () => {
        const store = Store.openIn(dataDir, { dataKey: unsealDataKey(tcti, dataDir) });
        try {
          return ReadingStore.open(store).countInBounds();
        } finally {
          store.close();
        }
      },
    };
  } catch (err) {
    await swtpm.stop();
    throw err;
  }
}

/**
 * The store's data key as the TRE unseals it (tre-broker/src/attestation/sealed-secrets.ts: the
 * TPM releases the wrapping key at `/HS/SRK/tre-secrets` only under the sealed PCR 23 value, and
 * `data-key.enc` is iv 12 || tag 16 || AES-256-GCM ciphertext). Only valid while PCR 23 still holds
 * the measurement of a TRE that ran (this process measures nothing).
 */
function unsealDataKey(tcti: string, dataDir: string): Buffer {
  const tpm = Tpm.open({ tcti, keystoreDir: join(dataDir, 'tpm') });
  let kek: Buffer;
  try {
    kek = tpm.unseal('/HS/SRK/tre-secrets');
  } finally {
    tpm.close();
  }
  const blob = readFileSync(sealedFiles(dataDir).dataKey);
  const decipher = createDecipheriv('aes-256-gcm', kek, blob.subarray(0, 12));
  decipher.setAuthTag(blob.subarray(12, 28));
  return Buffer.concat([decipher.update(blob.subarray(28)), decipher.final()]);
}

/** The regulator registers the households with the TRE: signed registry updates over MQTT, 10,000 at a time. */
export async function registerOverMqtt(
  ca: CertificateAuthority,
  url: string,
  households: Household[],
): Promise<void> {
  const files = await ca.issue('regulator', 'r1', { force: true });
  const key = createPrivateKey(await readFile(files.key));
  const client = await connect(url, files);
  try {
    const receipts = topics.inbox({ role: 'regulator', id: 'r1' }, 'receipt');
    await client.subscribeAsync(receipts, { qos: 1 });
    const issuedAt = Date.now();
    for (let i = 0; i < households.length; i += 10_000) {
      const requestId = `registry-${i}`;
      const answered = new Promise<void>((resolve, reject) => {
        const onMessage = (topic: string, payload: Buffer) => {
          if (topic !== receipts) return;
          const r = JSON.parse(payload.toString()) as { requestId: string; status: string; message?: string };
          if (r.requestId !== requestId) return;
          client.removeListener('message', onMessage);
          if (r.status === 'accepted') resolve();
          else reject(new Error(`the TRE refused the registry update: ${r.message}`));
        };
        client.on('message', onMessage);
      });
      const update = {
        v: PROTOCOL_VERSION,
        households: households.slice(i, i + 10_000),
        issuedAt: new Date(issuedAt + i / 10_000).toISOString(),
      };
      await client.publishAsync(
        topics.registry('r1'),
        JSON.stringify({
          v: PROTOCOL_VERSION,
          requestId,
          jws: await signContent('registryUpdate', update, key),
        }),
        { qos: 1 },
      );
      await answered;
    }
  } finally {
    await client.endAsync(true);
  }
}
