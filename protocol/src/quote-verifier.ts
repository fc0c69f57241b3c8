/**
 * Verifies a TRE's attestation evidence in pure TypeScript (runs on the meter agent; no TPM).
 * Checks run in this order and the verdict names the first that fails:
 *   ak-certificate  AK certificate chains to the regulator root, is not on the regulator's CRL
 *                   (itself signed by the root), is valid now, is an AK certificate (EKU
 *                   tcg-kp-AIKCertificate) for the same TRE as the TLS certificate
 *   signature       ECDSA P-256 / SHA-256 signature of TPMS_ATTEST with the AK
 *   attest          TPMS_ATTEST parses, magic TPM_GENERATED_VALUE, type TPM_ST_ATTEST_QUOTE
 *   quote-data      extraData = SHA-256(batch root || TLS key hash)
 *   nonce           the verifier's nonce is in the batch (Merkle inclusion proof)
 *   tls-binding     the TLS key hash is that of the certificate of the connection we are on
 *   pcr-digest      the reported PCR values hash to the quoted PCR digest (SHA-256 bank)
 *   event-log       replaying the measurement log gives the quoted PCR values
 *   whitelist       required PCRs quoted, PCR values and every event digest on the regulator's list;
 *                   the refusal names every component that differs (`whitelistDifferences`)
 */
import * as crypto from 'node:crypto';
import { createHash, verify, webcrypto, X509Certificate } from 'node:crypto';
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import type { AttestationPolicy, Evidence, MeasurementEvent } from './attestation.js';
import { merkleRootFromProof, qualifyingData } from './merkle.js';
import { parseQuoteAttest, TPM_ALG_SHA256, TPM_GENERATED_VALUE, TPM_ST_ATTEST_QUOTE } from './tpms-attest.js';

/** Extended key usage of an attestation-key certificate (TCG EK Credential Profile). */
export const AK_CERTIFICATE_EKU = '2.23.133.8.3';

export const ATTESTATION_CHECKS = [
  'ak-certificate',
  'signature',
  'attest',
  'quote-data',
  'nonce',
  'tls-binding',
  'pcr-digest',
  'event-log',
  'whitelist',
] as const;
export type AttestationCheck = (typeof ATTESTATION_CHECKS)[number];

export type AttestationVerdict =
  | { trusted: true; pcrs: Record<number, string> }
  | { trusted: false; check: AttestationCheck; reason: string };

export interface VerifyAttestationInput {
  nonce: Buffer;
  evidence: Evidence;
  regulatorRoot: X509Certificate;
  /** The regulator's CRL (PEM, `pki/crl.pem`), signed by the regulator root. */
  regulatorCrl: string;
  /** The TRE certificate presented on the connection the evidence arrived on. */
  treCertificate: X509Certificate;
  policy: AttestationPolicy;
  now: Date;
}

class CheckFailed extends Error {
  constructor(
    readonly check: AttestationCheck,
    message: string,
  ) {
    super(message);
  }
}

// One-shot hashing (crypto.hash, Node >= 20.12) where there is one: the event-log replay hashes
// once per measured component, hundreds of times per attestation.
const oneShot = (crypto as { hash?: (alg: string, data: Buffer, enc: 'buffer') => Buffer }).hash;
const sha256 = oneShot
  ? (b: Buffer) => oneShot('sha256', b, 'buffer')
  : (b: Buffer) => createHash('sha256').update(b).digest();
const treUri = (cert: X509Certificate) =>
  cert.subjectAltName?.split(', ').find((n) => n.startsWith('URI:urn:tre:tre:'));

/** SHA-256 of the certificate's public key (SPKI DER), once per certificate object. */
const keyHashes = new WeakMap<X509Certificate, Buffer>();
export function tlsKeyHash(cert: X509Certificate): Buffer {
  let hash = keyHashes.get(cert);
  if (!hash) {
    hash = sha256(cert.publicKey.export({ type: 'spki', format: 'der' }));
    keyHashes.set(cert, hash);
  }
  return hash;
}

/**
 * The AK certificate parsed and its signature checked against the regulator root, remembered per
 * (root, PEM) for the few most recent: an agent re-attests the same TRE every 15 minutes and on
 * every reconnect, so it parses and checks the chain once. Validity, revocation, usage and name
 * are still checked on every attestation. A string is the reason it fails.
 */
const akCache = new Map<string, { cert: X509Certificate; publicKey: crypto.KeyObject } | string>();
function akCertificateOf(pem: string, root: X509Certificate) {
  const key = `${root.fingerprint256}\n${pem}`;
  let entry = akCache.get(key);
  if (entry === undefined) {
    try {
      const cert = new X509Certificate(pem);
      entry =
        cert.verify(root.publicKey) && cert.issuer === root.subject
          ? { cert, publicKey: cert.publicKey }
          : 'the AK certificate is not issued by the regulator root';
    } catch {
      entry = 'the AK certificate does not parse';
    }
    if (akCache.size >= 16) akCache.delete(akCache.keys().next().value!);
    akCache.set(key, entry);
  }
  return entry;
}

export async function verifyAttestation(input: VerifyAttestationInput): Promise<AttestationVerdict> {
  try {
    return { trusted: true, pcrs: await runChecks(input) };
  } catch (err) {
    if (err instanceof CheckFailed) return { trusted: false, check: err.check, reason: err.message };
    throw err;
  }
}

async function runChecks({
  nonce,
  evidence,
  regulatorRoot,
  regulatorCrl,
  treCertificate,
  policy,
  now,
}: VerifyAttestationInput) {
  const fail = (check: AttestationCheck, reason: string): never => {
    throw new CheckFailed(check, reason);
  };
  // ak-certificate
  const checked = akCertificateOf(evidence.akCertificate, regulatorRoot);
  if (typeof checked === 'string') return fail('ak-certificate', checked);
  const ak = checked.cert;
  const revoked = await revokedSerials(regulatorCrl, regulatorRoot);
  if (typeof revoked === 'string') return fail('ak-certificate', revoked);
  const serial = normaliseSerial(ak.serialNumber);
  if (revoked.has(serial))
    fail('ak-certificate', `the AK certificate is revoked by the regulator (serial ${serial})`);
  if (now < new Date(ak.validFrom) || now > new Date(ak.validTo))
    fail('ak-certificate', 'the AK certificate is not valid now');
  if (!(ak.keyUsage ?? []).includes(AK_CERTIFICATE_EKU))
    fail('ak-certificate', 'the certificate is not an attestation-key certificate');
  if (!treUri(ak) || treUri(ak) !== treUri(treCertificate))
    fail('ak-certificate', 'the AK certificate names another TRE than the TLS certificate');
  // signature
  const attestBytes = Buffer.from(evidence.attest, 'base64');
  const signature = Buffer.from(evidence.signature, 'base64');
  if (!verify('sha256', attestBytes, { key: checked.publicKey, dsaEncoding: 'der' }, signature))
    fail('signature', 'the quote signature does not verify with the AK');
  // attest
  let attest: ReturnType<typeof parseQuoteAttest>;
  try {
    attest = parseQuoteAttest(attestBytes);
  } catch (err) {
    return fail('attest', (err as Error).message);
  }
  if (attest.magic !== TPM_GENERATED_VALUE) fail('attest', 'not generated by a TPM (magic)');
  if (attest.type !== TPM_ST_ATTEST_QUOTE) fail('attest', 'not a quote');
  // quote-data, nonce, tls-binding
  const root = Buffer.from(evidence.batch.root, 'hex');
  const keyHash = Buffer.from(evidence.tlsKeyHash, 'hex');
  if (!attest.extraData.equals(qualifyingData(root, keyHash)))
    fail('quote-data', 'the quote does not sign this batch root and TLS key');
  let proven: Buffer;
  try {
    proven = merkleRootFromProof(nonce, {
      ...evidence.batch,
      siblings: evidence.batch.siblings.map((s) => Buffer.from(s, 'hex')),
    });
  } catch (err) {
    return fail('nonce', (err as Error).message);
  }
  if (!proven.equals(root))
    fail('nonce', 'the quote does not cover our nonce (replayed or for someone else)');
  if (!keyHash.equals(tlsKeyHash(treCertificate)))
    fail('tls-binding', 'the quote is bound to another TLS endpoint (relayed)');
  // pcr-digest
  const selection = attest.pcrSelections.find((s) => s.hash === TPM_ALG_SHA256);
  if (!selection || attest.pcrSelections.length !== 1)
    fail('pcr-digest', 'the quote must select PCRs of the SHA-256 bank only');
  const quoted = [...selection!.pcrs].sort((a, b) => a - b);
  const reported = [...evidence.pcrs].sort((a, b) => a.index - b.index);
  if (quoted.join(',') !== reported.map((p) => p.index).join(','))
    fail('pcr-digest', 'reported PCRs differ from the quoted selection');
  const digest = sha256(Buffer.concat(reported.map((p) => Buffer.from(p.sha256, 'hex'))));
  if (!digest.equals(attest.pcrDigest))
    fail('pcr-digest', 'reported PCR values do not match the quoted digest');
  const pcrs = Object.fromEntries(reported.map((p) => [p.index, p.sha256])) as Record<number, string>;
  // event-log
  for (const [index, value] of replay(evidence.eventLog)) {
    if (pcrs[index] === undefined) fail('event-log', `the log measures PCR ${index}, which is not quoted`);
    if (value !== pcrs[index]) fail('event-log', `replaying the log does not give the quoted PCR ${index}`);
  }
  // whitelist
  for (const index of policy.requiredPcrs)
    if (pcrs[index] === undefined) fail('whitelist', `PCR ${index} is required but not quoted`);
  const components = whitelistDifferences(policy, evidence.eventLog);
  const logged = new Set(evidence.eventLog.map((e) => e.pcr));
  const pcrDifferences: string[] = [];
  for (const [index, allowed] of Object.entries(policy.pcrValues)) {
    const value = pcrs[Number(index)];
    // A PCR the log replays is explained by the components that differ, when some do.
    if (
      value !== undefined &&
      !allowed.includes(value) &&
      !(components.length > 0 && logged.has(Number(index)))
    )
      pcrDifferences.push(`PCR ${index} has a value not on the regulator's whitelist`);
  }
  const differences = [...pcrDifferences, ...components];
  if (differences.length > 0) fail('whitelist', listDifferences(differences));
  return pcrs;
}

/** Lower-case hex without leading zeros, as both X.509 libraries may print a serial differently. */
/**
 * The PCR values (hex) an event log replays to. Pure, so the last few logs' results are kept: a
 * TRE's log changes only when it measures something new, and a verifier sees it again and again.
 */
function replay(log: readonly { pcr: number; digest: string }[]): Map<number, string> {
  const key = log.map((e) => `${e.pcr}:${e.digest}`).join(',');
  const known = replays.get(key);
  if (known) return known;
  const replayed = new Map<number, Buffer>();
  const step = Buffer.alloc(64); // PCR value || event digest, reused for every extend
  for (const e of log) {
    (replayed.get(e.pcr) ?? Buffer.alloc(32)).copy(step, 0);
    step.write(e.digest, 32, 'hex');
    replayed.set(e.pcr, sha256(step));
  }
  const values = new Map([...replayed].map(([index, value]) => [index, value.toString('hex')]));
  if (replays.size >= 8) replays.delete(replays.keys().next().value!);
  replays.set(key, values);
  return values;
}
const replays = new Map<string, Map<number, string>>();

function normaliseSerial(serial: string): string {
  return serial.toLowerCase().replace(/^0+(?=.)/, '');
}

/** The last CRL checked: agents verify the same CRL on every attestation, and a batch many times. */
let lastCrl: { key: string; result: Set<string> | string } | undefined;

/**
 * The serials on the regulator's CRL, or why the CRL cannot be used (it does not parse, is not
 * issued or not signed by the regulator root).
 */
async function revokedSerials(pem: string, root: X509Certificate): Promise<Set<string> | string> {
  const key = `${root.fingerprint256}\n${pem}`;
  if (lastCrl?.key === key) return lastCrl.result;
  const result = await checkCrl(pem, root);
  lastCrl = { key, result };
  return result;
}

async function checkCrl(pem: string, root: X509Certificate): Promise<Set<string> | string> {
  if (typeof pem !== 'string' || pem.trim() === '')
    return "no regulator's CRL was given to check the AK against";
  let crl: x509.X509Crl;
  try {
    crl = new x509.X509Crl(pem);
  } catch {
    return "the regulator's CRL does not parse";
  }
  const issuer = new x509.X509Certificate(root.raw);
  if (crl.issuer !== issuer.subject) return "the regulator's CRL is not issued by the regulator root";
  const signed = await crl.verify({ publicKey: issuer }, webcrypto as unknown as Crypto).catch(() => false);
  if (!signed) return "the regulator's CRL is not signed by the regulator root";
  return new Set(crl.entries.map((e) => normaliseSerial(e.serialNumber)));
}

/**
 * A component's kind and name without its version or value, to pair a logged component with the
 * one the regulator whitelists: `config clockSpeed` (before `=`), `npm aedes` (before `@version`),
 * `shared object libc.so` (file name without directory and `.so` version), `node binary`.
 */
function componentKey(description: string): string {
  if (description.startsWith('config ')) {
    const eq = description.indexOf('=');
    return eq > 0 ? description.slice(0, eq) : description;
  }
  const npm = /^npm (@?[^@\s]+)@\S+/.exec(description);
  if (npm) return `npm ${npm[1]}`;
  const so = /^shared object (?:.*\/)?([^/]+?\.so)(?:\.[0-9][0-9.]*)?$/.exec(description);
  if (so) return `shared object ${so[1]}`;
  if (description.startsWith('node binary')) return 'node binary';
  return description;
}

/**
 * What differs between the TRE's measurement log and the regulator's whitelist, one readable line
 * per component, in log order and then whitelist order; empty when every logged digest is
 * whitelisted and every whitelisted component is in the log.
 *   - a logged component whose digest is not whitelisted:
 *       whitelisted under the same description     "<d> differs from the whitelisted release (changed file)"
 *       whitelisted under the same kind and name   "<d> is not whitelisted (the regulator whitelists <w>)"
 *       otherwise                                  "<d> is not on the regulator's whitelist (an extra component ...)"
 *   - a whitelisted component the log has neither by digest, description, nor kind and name:
 *                                                  "<w> is missing from the TRE's measurement"
 */
/** The whitelist's event digests, as a set made once per policy (verifiers check many quotes against one). */
const goldenSets = new WeakMap<object, Set<string>>();
function goldenDigests(policy: Pick<AttestationPolicy, 'eventDigests'>): Set<string> {
  let set = goldenSets.get(policy.eventDigests);
  if (!set) {
    set = new Set(policy.eventDigests.map((e) => e.digest));
    goldenSets.set(policy.eventDigests, set);
  }
  return set;
}

export function whitelistDifferences(
  policy: Pick<AttestationPolicy, 'eventDigests'>,
  eventLog: readonly Pick<MeasurementEvent, 'digest' | 'description'>[],
): string[] {
  const golden = goldenDigests(policy);
  // The common case, every event whitelisted and every whitelisted event logged: nothing to name.
  if (
    eventLog.every((e) => golden.has(e.digest)) &&
    new Set(eventLog.map((e) => e.digest)).size === golden.size
  )
    return [];
  const whitelisted = new Set(policy.eventDigests.map((e) => e.description));
  const logDigests = new Set(eventLog.map((e) => e.digest));
  const logDescriptions = new Set(eventLog.map((e) => e.description));
  const logKeys = new Set(eventLog.map((e) => componentKey(e.description)));
  const differences: string[] = [];
  for (const e of eventLog) {
    if (golden.has(e.digest)) continue;
    if (whitelisted.has(e.description)) {
      differences.push(`${e.description} differs from the whitelisted release (changed file)`);
      continue;
    }
    const key = componentKey(e.description);
    const instead = [
      ...new Set(
        policy.eventDigests
          .filter((w) => componentKey(w.description) === key && !logDescriptions.has(w.description))
          .map((w) => w.description),
      ),
    ];
    differences.push(
      instead.length > 0
        ? `${e.description} is not whitelisted (the regulator whitelists ${instead.slice(0, 3).join(' or ')})`
        : `${e.description} is not on the regulator's whitelist (an extra component, e.g. a preloaded library)`,
    );
  }
  const missing = new Set<string>();
  for (const w of policy.eventDigests)
    if (
      !logDigests.has(w.digest) &&
      !logDescriptions.has(w.description) &&
      !logKeys.has(componentKey(w.description))
    )
      missing.add(w.description);
  for (const d of missing) differences.push(`${d} is missing from the TRE's measurement`);
  return differences;
}

/** Differences joined with "; ", the first `max` of them and then how many more. */
export function listDifferences(differences: readonly string[], max = 10): string {
  const shown = differences.slice(0, max).join('; ');
  return differences.length > max ? `${shown}; and ${differences.length - max} more` : shown;
}
