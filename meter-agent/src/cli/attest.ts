/** `meter-agent attest`: attest a TRE once and print the verdict; exit 1 unless trusted. */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ManualClock, systemClock } from '@tre/protocol';
import type { Command } from 'commander';
import { Outbox } from '../outbox.js';
import { crlBeside, loadAttestationPolicy, readRegulatorCrl, tpmQuoteAttestor } from '../tre-attestor.js';
import { TreLink, type TrustVerdict } from '../tre-link.js';

interface AttestOptions {
  tre: string;
  meter: string;
  cert: string;
  key: string;
  ca: string;
  crl?: string;
  policy: string;
  json?: boolean;
}

export function addAttestCommand(program: Command): void {
  program
    .command('attest')
    .description('attest a TRE and print the verdict (exit 0 only if trusted)')
    .requiredOption('--tre <url>', 'mqtts://host:port')
    .requiredOption('--meter <id>', 'meter id of the certificate')
    .requiredOption('--cert <file>', 'client certificate')
    .requiredOption('--key <file>', 'client key')
    .requiredOption('--ca <file>', 'regulator root certificate')
    .option('--crl <file>', "regulator's CRL (PEM) (default: crl.pem next to --ca)")
    .requiredOption('--policy <file>', 'regulator-signed attestation whitelist (JWS)')
    .option('--json', 'print JSON')
    .action(async (o: AttestOptions) => {
      const verdict = await attestOnce(o);
      if (o.json) console.log(JSON.stringify(verdict));
      else console.log(verdict.trusted ? 'trusted' : `NOT trusted: ${verdict.check}: ${verdict.reason}`);
      if (!verdict.trusted) process.exitCode = 1;
    });
}

/** Connects once, with the agent's own link and attestor, and reports what the attestor decided. */
async function attestOnce(o: AttestOptions): Promise<TrustVerdict> {
  const ca = await readFile(o.ca, 'utf8');
  const crl = await readRegulatorCrl(o.crl ?? crlBeside(o.ca));
  const policy = await loadAttestationPolicy(await readFile(o.policy, 'utf8'), ca);
  let verdict: TrustVerdict = { trusted: false, check: 'connect', reason: 'no connection' };
  const attestor = tpmQuoteAttestor({
    regulatorRootPem: ca,
    regulatorCrlPem: crl,
    policy,
    clock: systemClock,
  });
  // The link sends from an outbox on disk; this one stays empty and is removed afterwards.
  const dir = await mkdtemp(join(tmpdir(), 'meter-agent-attest-'));
  const outbox = new Outbox(join(dir, 'outbox.jsonl'));
  try {
    const link = new TreLink({
      meterId: o.meter,
      endpoints: [o.tre],
      tls: { key: await readFile(o.key), cert: await readFile(o.cert), ca },
      outbox,
      clock: new ManualClock(Date.now()),
      attestor: async (session) => {
        const v = await attestor(session);
        verdict = v;
        return v;
      },
    });
    const done = new Promise<void>((resolve) => {
      link.on('state', (state, detail) => {
        if (state === 'trusted' || state === 'untrusted') resolve();
        if (state === 'offline') {
          verdict = { trusted: false, check: 'connect', reason: detail ?? 'connection failed' };
          resolve();
        }
      });
    });
    link.start();
    await done;
    await link.stop();
    return verdict;
  } finally {
    outbox.close();
    await rm(dir, { recursive: true, force: true });
  }
}
