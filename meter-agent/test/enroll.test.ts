/**
 * Zero-touch enrollment end to end, as on a first boot: the regulator's `tre pki token` and
 * `tre pki serve-enrollment` (the built CLI, a child process on a loopback port), the device's
 * `meter-agent provision enroll` (the built CLI, the first-boot script's exact flags), and the
 * enrolled certificate connecting to a TRE of the same regulator.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { meterAgent, tre, treCli } from '../../tre-broker/test/support/run-cli.js';
import { connectWith, startTreFixture, type TreFixture } from '../../tre-broker/test/support/tre-fixture.js';
import { enrollDevice } from '../src/device-identity.js';

interface Served {
  child: ChildProcess;
  port: number;
  log(): string;
  stop(): Promise<void>;
}

async function serveEnrollment(pkiDir: string, port = 0): Promise<Served> {
  const child = spawn(
    process.execPath,
    [treCli, 'pki', 'serve-enrollment', '--dir', pkiDir, '--listen', `127.0.0.1:${port}`],
    {
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  );
  let log = '';
  const listening = await new Promise<number>((resolve, reject) => {
    child.stderr!.on('data', (d) => {
      log += d;
      const line = log.split('\n').find((l) => l.includes('enrollment service listening'));
      if (line) resolve((JSON.parse(line) as { port: number }).port);
    });
    child.once('exit', (code) => reject(new Error(`serve-enrollment exited with ${code}: ${log}`)));
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return {
    child,
    port: listening,
    log: () => log,
    async stop() {
      child.kill('SIGTERM');
      await exited;
    },
  };
}

/** A loopback port nothing listens on (yet). */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** A device's files, laid out like the image's (boot partition and /etc/meter-agent). */
async function device(top: string, name: string, caPath: string) {
  const boot = join(top, name, 'boot', 'firmware', 'meter-agent');
  const etc = join(top, name, 'etc', 'meter-agent');
  await mkdir(boot, { recursive: true });
  await mkdir(etc, { recursive: true });
  await copyFile(caPath, join(etc, 'ca.crt'));
  return {
    token: join(boot, 'enroll.token'),
    key: join(etc, 'device.key'),
    cert: join(etc, 'device.crt'),
    ca: join(etc, 'ca.crt'),
  };
}

type Device = Awaited<ReturnType<typeof device>>;

describe('meter-agent provision enroll against tre pki serve-enrollment', { timeout: 60_000 }, () => {
  let fixture: TreFixture;
  let top: string;
  let server: Served;
  const tokens: string[] = [];

  const makeToken = async (meter: string, out: string, expires = '7d') => {
    const r = await tre(
      'pki',
      'token',
      '--dir',
      fixture.pkiDir,
      '--meter',
      meter,
      '--expires',
      expires,
      '--out',
      out,
    );
    expect(r.code, r.stderr).toBe(0);
    expect((await stat(out)).mode & 0o777).toBe(0o600);
    expect(r.stdout).not.toContain((await readFile(out, 'utf8')).trim());
    tokens.push((await readFile(out, 'utf8')).trim());
  };

  // Exactly what the image's first-boot script runs (paths under a temp dir).
  const outputs: string[] = [];
  const enroll = async (
    d: Device,
    meter: string,
    url = `https://127.0.0.1:${server.port}`,
    ...extra: string[]
  ) => {
    const r = await meterAgent(
      'provision',
      'enroll',
      '--server',
      url,
      '--token-file',
      d.token,
      '--meter',
      meter,
      '--key',
      d.key,
      '--cert',
      d.cert,
      '--ca',
      d.ca,
      ...extra,
    );
    outputs.push(r.stdout, r.stderr);
    return r;
  };

  beforeAll(async () => {
    fixture = await startTreFixture();
    top = await mkdtemp(join(tmpdir(), 'enroll-'));
    server = await serveEnrollment(fixture.pkiDir);
  });

  afterAll(async () => {
    await server?.stop();
    await fixture?.close();
    await rm(top, { recursive: true, force: true });
  });

  it('enrolls on first boot, the token works once, and the certificate connects to the TRE', async () => {
    const d = await device(top, 'pi-1', join(fixture.pkiDir, 'ca.crt'));
    await makeToken('m-0001', d.token);
    const spare = join(top, 'copy-of-m-0001.token');
    await copyFile(d.token, spare);

    const r = await enroll(d, 'm-0001');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/made the device key .*device\.key \(0600\)/);
    expect(r.stdout).toMatch(/enrolling at https:\/\/127\.0\.0\.1:\d+ \(try 1 of 10\)/);
    expect(r.stdout).toMatch(/enrolled: wrote .*device\.crt/);
    expect(r.stdout).toMatch(/deleted .*enroll\.token \(a token works once\)/);
    expect((await stat(d.key)).mode & 0o777).toBe(0o600);
    await expect(stat(d.token)).rejects.toThrow(/ENOENT/);

    // The same token on another device: refused (exit 3: first-boot.sh stops), not retried, with what to do.
    const thief = await device(top, 'pi-2', join(fixture.pkiDir, 'ca.crt'));
    await copyFile(spare, thief.token);
    const reused = await enroll(thief, 'm-0001');
    expect(reused.code).toBe(3);
    expect(reused.stderr).toMatch(
      /refused \(401\): the enrollment token was already used .*ask the regulator/,
    );
    expect(reused.stdout).toMatch(/try 1 of 10/);
    expect(reused.stdout).not.toMatch(/try 2/);
    await expect(stat(thief.cert)).rejects.toThrow(/ENOENT/);

    // A second run of the first-boot script: already enrolled, nothing sent.
    const rerun = await enroll(d, 'm-0001');
    expect(rerun.code, rerun.stderr).toBe(0);
    expect(rerun.stdout).toMatch(/already enrolled/);

    // The TRE admits a registered household's meter: the regulator registers it as usual.
    await fixture.tre.registry.upsert([
      { meterId: 'm-0001', supplierId: 's1', dnoId: 'd1', capacityW: 10_000, account: 'acc-m-0001' },
    ]);
    const client = await connectWith(fixture.url, { key: d.key, cert: d.cert, ca: d.ca });
    expect(client.connected).toBe(true);
    client.end(true);
  });

  it('refuses a token made for another meter', async () => {
    const d = await device(top, 'pi-3', join(fixture.pkiDir, 'ca.crt'));
    await makeToken('m-0002', d.token);
    const foreign = await enroll(d, 'm-0003');
    expect(foreign.code).toBe(3);
    expect(foreign.stderr).toMatch(/refused \(401\): the enrollment token was issued for another meter/);
    expect(foreign.stdout).not.toMatch(/try 2/);
    await expect(stat(d.token)).resolves.toBeDefined();
  });

  it('sends nothing to a server whose certificate does not chain to --ca (not retried)', async () => {
    const d = await device(top, 'pi-4', join(fixture.pkiDir, 'ca.crt'));
    await makeToken('m-0004', d.token);
    const other = join(top, 'other-regulator');
    await tre('pki', 'init', '--dir', other);
    await copyFile(join(other, 'ca.crt'), d.ca);
    const wrongCa = await enroll(d, 'm-0004');
    expect(wrongCa.code).toBe(1);
    expect(wrongCa.stderr).toMatch(
      /does not verify against the regulator root given .*check --server and --ca/,
    );
    expect(wrongCa.stdout).not.toMatch(/try 2/);
    // The token never reached the service: with the right root it still enrolls.
    await copyFile(join(fixture.pkiDir, 'ca.crt'), d.ca);
    expect((await enroll(d, 'm-0004')).code).toBe(0);
  });

  it('refuses an expired token', async () => {
    const late = await device(top, 'pi-6', join(fixture.pkiDir, 'ca.crt'));
    await makeToken('m-0006', late.token, '1s');
    await new Promise((resolve) => setTimeout(resolve, 1_100));
    const expired = await enroll(late, 'm-0006');
    expect(expired.code).toBe(3);
    expect(expired.stderr).toMatch(
      /refused \(401\): the enrollment token expired at .*ask the regulator for a new one/,
    );
  });

  it('retries while the service cannot be reached, then enrolls', async () => {
    const d = await device(top, 'pi-5', join(fixture.pkiDir, 'ca.crt'));
    await makeToken('m-0005', d.token);
    const port = await freePort();
    const lines: string[] = [];
    let late: Served | undefined;
    try {
      await enrollDevice({
        server: `https://127.0.0.1:${port}`,
        tokenFile: d.token,
        meterId: 'm-0005',
        keyPath: d.key,
        certPath: d.cert,
        caPath: d.ca,
        retryDelayMs: 10,
        progress: (line) => lines.push(line),
        // The service comes up while the device waits.
        sleep: async () => {
          late ??= await serveEnrollment(fixture.pkiDir, port);
        },
      });
    } finally {
      await late?.stop();
    }
    expect(lines.join('\n')).toMatch(/cannot reach 127\.0\.0\.1:\d+: ECONNREFUSED; trying again in/);
    expect(lines.join('\n')).toMatch(/try 2 of 10/);
    expect(lines.at(-1)).toMatch(/deleted .*enroll\.token/);
    expect(late!.log()).toMatch(/enrolled: certificate issued/);
  });

  it('a curious observer of the service log and the device output finds no token', () => {
    expect(tokens.length).toBeGreaterThanOrEqual(5);
    expect(server.log()).toMatch(/enrollment refused/);
    for (const t of tokens) {
      expect(server.log()).not.toContain(t);
      for (const output of outputs) expect(output).not.toContain(t);
    }
    expect(server.log()).not.toMatch(/m-000\d/);
  });
});
