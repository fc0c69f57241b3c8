/**
 * `tre-party attest`: attest a TRE once, as a DNO, supplier, DSM or regulator, with the same client
 * the reference parties use (`PartyClient`: the agent's verifier, the party's own nonce and topics),
 * and print the verdict; exit 1 unless trusted.
 */
import { createPrivateKey, type KeyObject, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { crlBeside, loadAttestationPolicy, readRegulatorCrl, tpmQuoteAttestor } from '@tre/meter-agent';
import { formatIdentity, systemClock } from '@tre/protocol';
import { type Command, Option } from 'commander';
import {
  identityOfCertificate,
  PartyClient,
  type TrustVerdict,
  UntrustedTreError,
} from '../parties/party-client.js';

export const PARTY_ROLES_ATTESTING = ['dno', 'supplier', 'dsm', 'regulator'] as const;

export interface AttestOptions {
  role: (typeof PARTY_ROLES_ATTESTING)[number];
  id: string;
  tre: string;
  cert: string;
  key: string;
  ca: string;
  crl?: string;
  policy: string;
  timeout: number;
  json?: boolean;
}

export function addAttestCommand(program: Command): void {
  withPartyOptions(
    program
      .command('attest')
      .description(
        "attest a TRE before your software sends it anything: a fresh nonce on your own attest topic, the TRE's TPM quote checked against the regulator root, the regulator's CRL and the regulator-signed whitelist (exit 0 only if trusted)",
      ),
  )
    .option('--json', 'print the verdict as JSON')
    .addHelpText(
      'after',
      `
Prints "trusted", or "NOT trusted: <check>: <reason>" with the check that failed: connect, tls,
response, unavailable, ak-certificate (chain, revoked on the CRL, validity, TRE name), signature,
attest, quote-data, nonce, tls-binding, pcr-digest, event-log, whitelist (every component that
differs from the whitelisted release).`,
    )
    .action(async (o: AttestOptions) => {
      const verdict = await attestOnce(o);
      if (o.json) console.log(JSON.stringify(verdict));
      else console.log(verdict.trusted ? 'trusted' : `NOT trusted: ${verdict.check}: ${verdict.reason}`);
      if (!verdict.trusted) process.exitCode = 1;
    });
}

/**
 * Connects with the party's certificate and attests the TRE: the connected party when trusted
 * (for a command that then sends something), else the verdict.
 */
export async function connectAttested(
  o: AttestOptions,
): Promise<{ party: PartyClient; key: KeyObject } | { verdict: TrustVerdict & { trusted: false } }> {
  const [ca, cert] = await Promise.all([readFile(o.ca, 'utf8'), readFile(o.cert)]);
  const crl = await readRegulatorCrl(o.crl ?? crlBeside(o.ca));
  const mine = identityOfCertificate(cert);
  const asked = formatIdentity({ role: o.role, id: o.id });
  if (formatIdentity(mine) !== asked)
    throw new Error(`${o.cert} is the certificate of ${formatIdentity(mine)}, not of ${asked}`);
  const policy = await loadAttestationPolicy(await readFile(o.policy, 'utf8'), ca);
  if (!Number.isFinite(o.timeout) || o.timeout <= 0) throw new Error('--timeout must be a number of seconds');
  const attestor = tpmQuoteAttestor({
    regulatorRootPem: ca,
    regulatorCrlPem: crl,
    policy,
    clock: systemClock,
    timeoutMs: o.timeout * 1000,
  });
  let party: PartyClient;
  try {
    // A client id of its own: the party's running software keeps its session.
    party = await PartyClient.connect(
      o.tre,
      { key: o.key, cert: o.cert, ca: o.ca },
      `tre-party-${randomBytes(6).toString('hex')}`,
      attestor,
      { reconnectPeriod: 0 },
    );
  } catch (err) {
    if (err instanceof UntrustedTreError)
      return { verdict: err.verdict as TrustVerdict & { trusted: false } };
    return { verdict: { trusted: false, check: 'connect', reason: (err as Error).message } };
  }
  const verdict = await party.verdict();
  if (!verdict.trusted) {
    await party.close();
    return { verdict };
  }
  return { party, key: createPrivateKey(await readFile(o.key)) };
}

/**
 * For a command that sends something: connects and attests the TRE, then runs `send` with the
 * connected party and closes it; an untrusted TRE gets nothing (`NOT trusted: ...`, exit code 1).
 */
export async function asTrustedParty(
  o: AttestOptions,
  send: (attested: { party: PartyClient; key: KeyObject }) => Promise<void>,
): Promise<void> {
  const attested = await connectAttested(o);
  if ('verdict' in attested) {
    console.error(`NOT trusted: ${attested.verdict.check}: ${attested.verdict.reason}; nothing sent`);
    process.exitCode = 1;
    return;
  }
  try {
    await send(attested);
  } finally {
    await attested.party.close();
  }
}

/** Connects once with the party's certificate, attests the TRE and reports the verdict. */
async function attestOnce(o: AttestOptions): Promise<TrustVerdict> {
  const attested = await connectAttested(o);
  if ('verdict' in attested) return attested.verdict;
  await attested.party.close();
  return { trusted: true };
}

/** The options every command that talks to a TRE takes: who you are, which TRE, what to trust. */
export function withPartyOptions(
  command: Command,
  roles: readonly string[] = PARTY_ROLES_ATTESTING,
): Command {
  return command
    .addOption(
      new Option('--role <role>', 'your role, as in your certificate').choices(roles).makeOptionMandatory(),
    )
    .requiredOption('--id <id>', 'your id, as in your certificate (urn:tre:<role>:<id>)')
    .requiredOption('--tre <url>', 'the TRE: mqtts://host:port')
    .requiredOption('--cert <file>', 'your client certificate (issued by the regulator)')
    .requiredOption('--key <file>', 'your client key')
    .requiredOption('--ca <file>', "the regulator's root certificate")
    .option('--crl <file>', "the regulator's CRL, PEM (default: crl.pem next to --ca)")
    .requiredOption(
      '--policy <file>',
      'the regulator-signed attestation whitelist (JWS, `tre attest-policy`)',
    )
    .option('--timeout <seconds>', 'how long to wait for the TRE', (v) => Number.parseFloat(v), 10);
}
