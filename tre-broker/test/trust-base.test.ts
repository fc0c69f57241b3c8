/**
 * The trust base, from outside, against swtpm, with the command lines a TRE operator and a
 * regulator run, on a copy of the release (so that its files can be changed):
 * - the README's enrollment path leaves no plaintext TRE key on disk at any step;
 * - a TRE that changed (one byte of aedes, a native binary, an accelerated clock, another Node
 *   binary, an LD_PRELOAD library) and was enrolled that way is refused by `meter-agent attest`
 *   against the regulator's whitelist of the pristine release, with the component named; a
 *   revoked AK certificate is refused too; a TRE enrolled pristine and then changed cannot start;
 * - its data directory copied to another machine (a second swtpm) reveals no reading, household or
 *   account, and the TRE refuses to start there.
 */
import { execFile } from 'node:child_process';
import { createPrivateKey, createPublicKey, X509Certificate } from 'node:crypto';
import { appendFileSync, copyFileSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { promisify } from 'node:util';
import { type Swtpm, startSwtpm } from '@tre/hardware';
import { PROTOCOL_VERSION, signContent, topics } from '@tre/protocol';
import { CertificateAuthority, copyRelease } from '@tre/tre-broker';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CliResult, meterAgent, treParty } from './support/run-cli.js';
import { connectWith, nextMessage } from './support/tre-fixture.js';
import { spawnTre } from './support/tre-process.js';

const run = promisify(execFile);
const METER = 'meter-7f3a9c2e51';
const ACCOUNT = 'account-5d1e8b7a90';

let dir = '';
let rel = ''; // the copied release
let swtpm: Swtpm;
let reg = ''; // the regulator's directory (ca.key)

interface Runner {
  node?: string;
  env?: NodeJS.ProcessEnv;
}

/** `tre ...` from the copied release. */
function tre(args: string[], runner: Runner = {}): Promise<CliResult> {
  return run(runner.node ?? process.execPath, [join(rel, 'tre-broker', 'dist', 'cli.js'), ...args], {
    env: runner.env ?? process.env,
  }).then(
    (r) => ({ code: 0, ...r }),
    (e: CliResult) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
  );
}

async function ok(args: string[], runner?: Runner): Promise<string> {
  const r = await tre(args, runner);
  if (r.code !== 0) throw new Error(`tre ${args.join(' ')} failed (${r.code}): ${r.stderr}`);
  return r.stdout;
}

/** Every private key (PEM or DER PKCS#8) in any file under `root`, as its public key (SPKI DER hex). */
function privateKeysUnder(root: string): Map<string, string> {
  const found = new Map<string, string>();
  const pkcs8Ec = Buffer.from('020100301306072a8648ce3d020106082a8648ce3d030107', 'hex');
  const walk = (d: string) => {
    for (const name of readdirSync(d)) {
      const path = join(d, name);
      const st = statSync(path, { throwIfNoEntry: false });
      if (!st) continue;
      if (st.isDirectory()) {
        if (path !== rel) walk(path);
        continue;
      }
      const bytes = readFileSync(path);
      const pems = bytes
        .toString('latin1')
        .match(/-----BEGIN [A-Z ]*PRIVATE KEY-----[^-]+-----END [A-Z ]*PRIVATE KEY-----/g);
      for (const pem of pems ?? [])
        found.set(
          createPublicKey(pem).export({ type: 'spki', format: 'der' }).toString('hex'),
          relative(dir, path),
        );
      if (bytes.includes(pkcs8Ec) && !pems) found.set(`der:${relative(dir, path)}`, relative(dir, path));
    }
  };
  walk(root);
  return found;
}

/** The README's enrollment path (AK, then the TLS key born sealed), scanning for keys after each step. */
async function enroll(data: string, trePki: string, extra: string[] = [], runner?: Runner) {
  const T = swtpm.tcti;
  const keys = new Map<string, string>();
  const step = async (args: string[], by?: Runner) => {
    await ok(args, by);
    for (const [k, v] of privateKeysUnder(dir)) keys.set(k, v);
  };
  if (!statSync(join(data, 'tpm', 'ak.crt'), { throwIfNoEntry: false })) {
    await step(['enroll', 'request', '--tpm', T, '--data', data, '--out', join(dir, 'req.json')]);
    await step([
      'pki',
      'endorse-ak',
      'challenge',
      '--dir',
      reg,
      '--request',
      join(dir, 'req.json'),
      '--allow-uncertified-ek',
      '--out',
      join(dir, 'ch.json'),
    ]);
    await step([
      'enroll',
      'activate',
      '--tpm',
      T,
      '--data',
      data,
      '--challenge',
      join(dir, 'ch.json'),
      '--out',
      join(dir, 'resp.json'),
    ]);
    await step([
      'pki',
      'endorse-ak',
      'certify',
      '--dir',
      reg,
      '--request',
      join(dir, 'req.json'),
      '--response',
      join(dir, 'resp.json'),
      '--out',
      join(data, 'tpm', 'ak.crt'),
    ]);
  }
  await step(
    [
      'enroll',
      'tls',
      '--tpm',
      T,
      '--data',
      data,
      '--pki',
      trePki,
      '--csr',
      join(dir, 'tre.csr'),
      '--force',
      ...extra,
    ],
    runner,
  );
  await step([
    'pki',
    'sign-csr',
    '--dir',
    reg,
    '--role',
    'tre',
    '--id',
    'tre',
    '--csr',
    join(dir, 'tre.csr'),
    '--out',
    join(trePki, 'tre.crt'),
  ]);
  copyFileSync(join(reg, 'ca.crt'), join(trePki, 'ca.crt'));
  copyFileSync(join(reg, 'crl.pem'), join(trePki, 'crl.pem'));
  return keys;
}

async function registerMeter(port: number) {
  const regulator = await CertificateAuthority.open(reg);
  const files = await regulator.issue('regulator', 'r1', { force: true });
  const client = await connectWith(`mqtts://127.0.0.1:${port}`, files);
  const receipt = nextMessage(client, topics.inbox({ role: 'regulator', id: 'r1' }, 'receipt'));
  await client.publishAsync(
    topics.registry('r1'),
    JSON.stringify({
      v: PROTOCOL_VERSION,
      requestId: 'reg-1',
      // Signed with the regulator's own client key: the TRE checks it against the sender's certificate.
      jws: await signContent(
        'registryUpdate',
        {
          v: PROTOCOL_VERSION,
          households: [
            { meterId: METER, supplierId: 's1', dnoId: 'd1', capacityW: 10_000, account: ACCOUNT },
          ],
          issuedAt: new Date().toISOString(),
        },
        createPrivateKey(await readFile(files.key)),
      ),
    }),
    { qos: 1 },
  );
  const answer = JSON.parse((await receipt).payload.toString()) as { status: string; message?: string };
  expect(answer, answer.message).toMatchObject({ status: 'accepted' });
  client.end(true);
}

async function attest(port: number) {
  const m = join(reg, 'clients', `meter-${METER}`);
  const r = await meterAgent(
    'attest',
    '--tre',
    `mqtts://127.0.0.1:${port}`,
    '--meter',
    METER,
    '--cert',
    `${m}.crt`,
    '--key',
    `${m}.key`,
    '--ca',
    join(reg, 'ca.crt'),
    '--crl',
    join(reg, 'crl.pem'),
    '--policy',
    join(dir, 'policy.jws'),
    '--json',
  );
  return JSON.parse(r.stdout) as { trusted: boolean; check?: string; reason?: string };
}

/** Enrolls a changed TRE (its keys sealed to the changed measurement), starts it, attests it. */
async function changedTre(change: { args?: string[]; runner?: Runner }) {
  const data = join(dir, 'data-changed');
  if (!statSync(data, { throwIfNoEntry: false }))
    await cp(join(dir, 'data', 'tpm'), join(data, 'tpm'), { recursive: true });
  const trePki = join(dir, 'tre-pki-changed');
  // The store of the previous variant is under a data key this measurement cannot unseal.
  for (const name of readdirSync(data, { withFileTypes: true }).filter((e) => e.name !== 'tpm'))
    await rm(join(data, name.name), { recursive: true, force: true });
  await enroll(data, trePki, change.args, change.runner);
  const t = await spawnTre(trePki, data, 0, ['--tpm', swtpm.tcti, ...(change.args ?? [])], {
    node: change.runner?.node,
    cli: join(rel, 'tre-broker', 'dist', 'cli.js'),
    env: change.runner?.env,
  });
  try {
    await registerMeter(t.port);
    return await attest(t.port);
  } finally {
    await t.stop();
  }
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tre-trust-base-'));
  rel = join(dir, 'release');
  await copyRelease(rel);
  swtpm = await startSwtpm({ dir: join(dir, 'swtpm-a') });
  reg = join(dir, 'regulator');
  await ok(['pki', 'init', '--dir', reg]);
  await ok(['pki', 'issue', '--dir', reg, '--role', 'meter', '--id', METER]);
  // The regulator's whitelist of the pristine release, measured on the reference device.
  await ok(['attest-policy', '--pki', reg, '--tpm', swtpm.tcti, '--out', join(dir, 'policy.jws')]);
}, 120_000);
afterAll(async () => {
  await swtpm?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe('the trust base (swtpm, command lines, a copied release)', () => {
  it('the README enrollment path: the TLS key is born sealed, no plaintext copy at any step; the TRE attests', {
    timeout: 90_000,
  }, async () => {
    const data = join(dir, 'data');
    const trePki = join(dir, 'tre-pki');
    const keys = await enroll(data, trePki);
    const trePublic = new X509Certificate(await readFile(join(trePki, 'tre.crt'))).publicKey
      .export({ type: 'spki', format: 'der' })
      .toString('hex');
    // Private keys on disk: the regulator's CA key and the meter's (issued by the regulator), nothing else.
    expect(keys.has(trePublic)).toBe(false);
    expect([...keys.values()].sort()).toEqual(
      ['regulator/ca.key', `regulator/clients/meter-${METER}.key`].sort(),
    );
    expect(readdirSync(trePki).sort()).toEqual(['ca.crt', 'crl.pem', 'tre.crt']);

    const t = await spawnTre(trePki, data, 0, ['--tpm', swtpm.tcti], {
      cli: join(rel, 'tre-broker', 'dist', 'cli.js'),
    });
    try {
      // The regulator attests the TRE, then registers the household (signed registry update).
      await ok(['pki', 'issue', '--dir', reg, '--role', 'regulator', '--id', 'r1', '--force']);
      const csv = join(dir, 'households.csv');
      await writeFile(csv, `meterId,supplierId,dnoId,capacityW,account\n${METER},s1,d1,10000,${ACCOUNT}\n`);
      const r1 = join(reg, 'clients', 'regulator-r1');
      const registered = await treParty(
        'registry',
        '--role',
        'regulator',
        '--id',
        'r1',
        '--tre',
        `mqtts://127.0.0.1:${t.port}`,
        '--cert',
        `${r1}.crt`,
        '--key',
        `${r1}.key`,
        '--ca',
        join(reg, 'ca.crt'),
        '--policy',
        join(dir, 'policy.jws'),
        '--file',
        csv,
      );
      expect(registered.stdout + registered.stderr).toMatch(/registered 1 households/);
      expect(await attest(t.port)).toMatchObject({ trusted: true });
      // A reading stored: it must not be readable from a copy of the data directory.
      const m = join(reg, 'clients', `meter-${METER}`);
      const meter = await connectWith(`mqtts://127.0.0.1:${t.port}`, {
        key: `${m}.key`,
        cert: `${m}.crt`,
        ca: join(reg, 'ca.crt'),
      });
      const start = new Date(Math.floor(Date.now() / 1_800_000) * 1_800_000 - 1_800_000);
      await meter.publishAsync(
        topics.reading(METER),
        JSON.stringify({
          v: PROTOCOL_VERSION,
          requestId: 'r-1',
          intervalStart: start.toISOString(),
          intervalMinutes: 30,
          energyWh: 987_654,
          registerWh: 123_456_789,
        }),
        { qos: 1 }, // PUBACK: committed to the store
      );
      meter.end(true);
    } finally {
      await t.stop();
    }
    expect(keys.size).toBeGreaterThan(0);
  });

  it('a changed TRE, enrolled as changed, is refused with the component named', {
    timeout: 180_000,
  }, async () => {
    // One byte of aedes.
    const aedes = join(rel, 'node_modules', 'aedes', 'aedes.js');
    const pristine = readFileSync(aedes);
    appendFileSync(aedes, ' ');
    try {
      expect(await changedTre({})).toMatchObject({
        trusted: false,
        check: 'whitelist',
        reason: expect.stringMatching(/npm aedes@[^ ]+ node_modules\/aedes differs/),
      });
    } finally {
      await writeFile(aedes, pristine);
    }

    // A native binary (the SQLite addon).
    const natives = (await ok(['measure', '--tpm', swtpm.tcti]))
      .split('\n')
      .filter((l) => / native .*sqlite.*\.node$/.test(l));
    expect(natives.length).toBeGreaterThan(0);
    const addon = join(rel, natives[0]!.split(' native ')[1]!);
    const addonBytes = readFileSync(addon);
    appendFileSync(addon, Buffer.from([0]));
    try {
      expect(await changedTre({})).toMatchObject({
        trusted: false,
        reason: expect.stringMatching(/native .*\.node differs/),
      });
    } finally {
      await writeFile(addon, addonBytes);
    }

    // An accelerated clock: a "month" of billing in minutes.
    expect(await changedTre({ args: ['--clock-speed', '1000'] })).toMatchObject({
      trusted: false,
      reason: expect.stringMatching(/config clockSpeed=1000/),
    });

    // Another Node binary (one byte more).
    const node = join(dir, 'node-changed');
    copyFileSync(process.execPath, node);
    appendFileSync(node, Buffer.from([0]));
    await run('chmod', ['+x', node]);
    expect(await changedTre({ runner: { node } })).toMatchObject({
      trusted: false,
      reason: expect.stringMatching(/node binary differs/),
    });

    // A preloaded shared library, one the TRE does not load itself (tpm2-tss already brings libz,
    // libcurl, libssl...): its own event, on no whitelist.
    const measured = await ok(['measure', '--tpm', swtpm.tcti]);
    const extra = ['libbz2.so.1.0', 'liblzma.so.5', 'libpcre2-8.so.0', 'libexpat.so.1']
      .map((name) => `/usr/lib/${process.arch === 'arm64' ? 'aarch64' : 'x86_64'}-linux-gnu/${name}`)
      .find(
        (lib) =>
          statSync(lib, { throwIfNoEntry: false }) &&
          !measured.includes(lib.split('/').pop()!.split('.so')[0]!),
      );
    expect(extra, 'a system library the TRE does not map').toBeDefined();
    const env = { ...process.env, LD_PRELOAD: extra };
    expect(await changedTre({ runner: { env } })).toMatchObject({
      trusted: false,
      reason: expect.stringMatching(/shared object .* not on the regulator's whitelist/),
    });
  });

  it('a pristine-enrolled TRE whose node_modules changed cannot start; a revoked AK certificate is refused', {
    timeout: 90_000,
  }, async () => {
    const aedes = join(rel, 'node_modules', 'aedes', 'aedes.js');
    const pristine = readFileSync(aedes);
    appendFileSync(aedes, ' ');
    const refused = await tre([
      'start',
      '--pki',
      join(dir, 'tre-pki'),
      '--data',
      join(dir, 'data'),
      '--tpm',
      swtpm.tcti,
      '--port',
      '0',
    ]);
    await writeFile(aedes, pristine);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/differs from the one its keys were sealed to.*refuses to start/);

    await ok(['pki', 'revoke', '--dir', reg, '--role', 'tre-ak', '--id', 'tre']);
    const t = await spawnTre(join(dir, 'tre-pki'), join(dir, 'data'), 0, ['--tpm', swtpm.tcti], {
      cli: join(rel, 'tre-broker', 'dist', 'cli.js'),
    });
    try {
      expect(await attest(t.port)).toMatchObject({
        trusted: false,
        check: 'ak-certificate',
        reason: expect.stringMatching(/revoked/),
      });
    } finally {
      await t.stop();
    }
  });

  it('the data directory on another machine: nothing readable, and the TRE refuses to start', {
    timeout: 60_000,
  }, async () => {
    const copy = join(dir, 'machine-b');
    await cp(join(dir, 'data'), join(copy, 'data'), { recursive: true });
    await cp(join(dir, 'tre-pki'), join(copy, 'tre-pki'), { recursive: true });
    const files: string[] = [];
    const walk = (d: string) => {
      for (const name of readdirSync(d)) {
        const p = join(d, name);
        if (statSync(p).isDirectory()) walk(p);
        else files.push(p);
      }
    };
    walk(join(copy, 'data'));
    expect(files.some((f) => f.endsWith('tre.sqlite'))).toBe(true);
    for (const f of files) {
      const bytes = readFileSync(f);
      for (const secret of [METER, ACCOUNT, 'SQLite format 3', '987654', '123456789'])
        expect({ file: relative(copy, f), found: bytes.includes(secret) }).toEqual({
          file: relative(copy, f),
          found: false,
        });
    }
    const machineB = await startSwtpm({ dir: join(dir, 'swtpm-b') });
    try {
      const r = await tre([
        'start',
        '--pki',
        join(copy, 'tre-pki'),
        '--data',
        join(copy, 'data'),
        '--tpm',
        machineB.tcti,
        '--port',
        '0',
      ]);
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/refuses to start|TPM/);
    } finally {
      await machineB.stop();
    }
    expect(dirname(copy)).toBe(dir);
  });
});
