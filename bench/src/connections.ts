/**
 * `connections`: concurrent mutual-TLS meter sessions held by one broker process, handshakes per
 * second and resident memory per session; the same load against mosquitto (same PKI) in the same
 * run. The load generators are separate processes (each holds its share of sockets), so the broker
 * process only pays for its own side; counts stay below the 20,000 open-file limit per process.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { webcrypto } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { CertificateAuthority, registerHouseholds } from '@tre/tre-broker';
import { summariseProfile } from './cpu-profile.js';
import { freePort, spawnTre } from './load.js';
import { startMosquitto } from './mosquitto.js';
import { type BenchResult, procStatusKiB } from './report.js';

x509.cryptoProvider.set(webcrypto as unknown as Crypto);
const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const worker = fileURLToPath(new URL('./connection-worker.js', import.meta.url));

export interface ConnectionsOptions {
  sessions: number;
  generators: number;
}

/** Many meter certificates at once: one shared key pair, one certificate per meter id (real, from the CA). */
async function meterCertificates(pkiDir: string, n: number) {
  const caCert = new x509.X509Certificate(await readFile(join(pkiDir, 'ca.crt'), 'utf8'));
  const caKey = await webcrypto.subtle.importKey(
    'pkcs8',
    x509.PemConverter.decodeFirst(await readFile(join(pkiDir, 'ca.key'), 'utf8')),
    ALG,
    false,
    ['sign'],
  );
  const keys = (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as CryptoKeyPair;
  const keyPem = x509.PemConverter.encode(
    await webcrypto.subtle.exportKey('pkcs8', keys.privateKey),
    'PRIVATE KEY',
  );
  const certs: string[] = [];
  for (let i = 0; i < n; i++) {
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: (0x100000 + i).toString(16),
      subject: `CN=meter:c${i}`,
      issuer: caCert.subject,
      notBefore: new Date(Date.now() - 60_000),
      notAfter: new Date(Date.now() + 86_400_000),
      signingAlgorithm: ALG,
      publicKey: keys.publicKey,
      signingKey: caKey,
      extensions: [
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth]),
        new x509.SubjectAlternativeNameExtension([{ type: 'url', value: `urn:tre:meter:c${i}` }]),
      ],
    });
    certs.push(cert.toString('pem'));
  }
  return { keyPem, certs };
}

async function hold(
  dir: string,
  port: number,
  ca: string,
  sessions: { key: string; cert: string; clientId: string }[],
  generators: number,
) {
  const share = Math.ceil(sessions.length / generators);
  const children: ChildProcess[] = [];
  for (let g = 0; g < generators; g++) {
    const file = join(dir, `job-${port}-${g}.json`);
    await writeFile(
      file,
      JSON.stringify({ port, ca, concurrency: 64, sessions: sessions.slice(g * share, (g + 1) * share) }),
    );
    children.push(fork(worker, [file], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] }));
  }
  const start = performance.now();
  const reports = await Promise.all(
    children.map(
      (c) =>
        new Promise<{ connected: number; failed: number }>((resolve) =>
          c.once('message', (m) => resolve(m as { connected: number; failed: number })),
        ),
    ),
  );
  const seconds = (performance.now() - start) / 1000;
  return {
    connected: reports.reduce((a, r) => a + r.connected, 0),
    failed: reports.reduce((a, r) => a + r.failed, 0),
    seconds,
    release: async () => {
      await Promise.all(
        children.map(
          (c) =>
            new Promise((resolve) => {
              c.once('exit', resolve);
              c.send('stop');
            }),
        ),
      );
    },
  };
}

export async function runConnections(
  opts: ConnectionsOptions,
  progress: (line: string) => void = () => {},
): Promise<BenchResult> {
  const dir = await mkdtemp(join(tmpdir(), 'bench-conn-'));
  try {
    const pki = join(dir, 'pki');
    const { tre } = await CertificateAuthority.initForDevelopment(pki);
    progress(`issuing ${opts.sessions} meter certificates`);
    const { keyPem, certs } = await meterCertificates(pki, opts.sessions);
    await registerHouseholds(
      join(dir, 'data'),
      certs.map((_, i) => ({
        meterId: `c${i}`,
        supplierId: 's1',
        dnoId: 'd1',
        capacityW: 10_000,
        account: `a${i}`,
      })),
    );
    const ca = await readFile(tre.ca, 'utf8');
    const sessions = certs.map((cert, i) => ({ key: keyPem, cert, clientId: `c${i}` }));
    const rows: (string | number)[][] = [];

    const measure = async (name: string, pid: number, port: number) => {
      const before = procStatusKiB(pid, 'VmRSS');
      const held = await hold(dir, port, ca, sessions, opts.generators);
      await new Promise((r) => setTimeout(r, 1000));
      const after = procStatusKiB(pid, 'VmRSS');
      rows.push([
        name,
        held.connected,
        held.failed,
        held.connected / held.seconds,
        Math.round(before / 1024),
        Math.round(after / 1024),
        ((after - before) * 1024) / Math.max(1, held.connected) / 1024,
      ]);
      await held.release();
    };

    progress('TRE');
    const trePort = await freePort();
    const profileDir = join(dir, 'profile');
    const treProc = await spawnTre(pki, join(dir, 'data'), trePort, profileDir);
    await measure('TRE (aedes, node:tls)', treProc.child.pid!, trePort);
    await treProc.stop();
    const profileFile = (await readdir(profileDir)).find((f) => f.endsWith('.cpuprofile'));
    const profile = profileFile ? summariseProfile(join(profileDir, profileFile)) : [];

    progress('mosquitto');
    const mqPort = await freePort();
    const mosquitto = await startMosquitto(dir, tre, mqPort);
    await measure('mosquitto (baseline)', mosquitto.process.pid!, mqPort);
    await mosquitto.stop();

    const [t, m] = rows;
    return {
      name: 'connections',
      description: `${opts.sessions} concurrent mTLS MQTT sessions from ${opts.generators} load-generator processes`,
      columns: [
        'broker',
        'held',
        'failed',
        'handshakes/s',
        'RSS before MiB',
        'RSS after MiB',
        'KiB per session',
      ],
      rows,
      notes:
        t && m
          ? [
              `ratio TRE / mosquitto: handshakes/s ${(Number(t[3]) / Number(m[3])).toFixed(2)}, memory per session ${(Number(t[6]) / Number(m[6])).toFixed(2)}`,
              `TRE CPU profile (self time, whole run incl. start-up): ${profile.map((p) => `${p.component} ${(100 * p.share).toFixed(0)} %`).join(', ')}`,
            ]
          : [],
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
