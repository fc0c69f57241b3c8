/** The `tre` command line as a user runs it: the built CLI in a child process. */
import { execFile, spawn } from 'node:child_process';
import { copyFile, mkdtemp, readFile, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { tre, treCli } from './support/run-cli.js';

const run = promisify(execFile);

describe('tre pki', () => {
  it('init makes the CA only; the TRE makes its key and the regulator signs its request; keys 0600, never overwritten without --force', async () => {
    const top = await mkdtemp(join(tmpdir(), 'tre-cli-'));
    const dir = join(top, 'pki');
    const init = await tre('pki', 'init', '--dir', dir);
    expect(init.code).toBe(0);
    expect((await stat(join(dir, 'ca.key'))).mode & 0o777).toBe(0o600);
    expect(await readFile(join(dir, 'crl.pem'), 'utf8')).toMatch(/BEGIN X509 CRL/);
    const again = await tre('pki', 'init', '--dir', dir);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/already exists.*--force/);

    // The TRE's side (development, no TPM): its own directory, its key made there.
    const trePki = join(top, 'tre-pki');
    const csr = join(top, 'tre.csr');
    const enrolled = await tre(
      'enroll',
      'tls',
      '--pki',
      trePki,
      '--data',
      join(top, 'data'),
      '--host',
      'tre.example.org',
      '--csr',
      csr,
    );
    expect(enrolled.code, enrolled.stderr).toBe(0);
    expect(enrolled.stdout).toMatch(/development/);
    expect((await stat(join(trePki, 'tre.key'))).mode & 0o777).toBe(0o600);
    const signed = await tre(
      'pki',
      'sign-csr',
      '--dir',
      dir,
      '--role',
      'tre',
      '--id',
      'tre',
      '--csr',
      csr,
      '--out',
      join(trePki, 'tre.crt'),
    );
    expect(signed.code, signed.stderr).toBe(0);
    const { stdout: server } = await run('openssl', [
      'x509',
      '-in',
      join(trePki, 'tre.crt'),
      '-noout',
      '-ext',
      'subjectAltName,extendedKeyUsage',
    ]);
    expect(server).toMatch(
      /DNS:localhost.*IP Address:127\.0\.0\.1.*URI:urn:tre:tre:tre.*DNS:tre\.example\.org/s,
    );
    expect(server).toMatch(/TLS Web Server Authentication/);
    expect(
      (await tre('enroll', 'tls', '--pki', trePki, '--data', join(top, 'data'), '--csr', csr)).stderr,
    ).toMatch(/exists.*--force/);

    const issued = await tre('pki', 'issue', '--dir', dir, '--role', 'meter', '--id', 'm1', '--json');
    expect(issued.code).toBe(0);
    const meter = JSON.parse(issued.stdout) as { key: string; cert: string; ca: string };
    expect((await stat(meter.key)).mode & 0o777).toBe(0o600);
    expect(meter.ca).toBe(join(dir, 'ca.crt'));
    const { stdout } = await run('openssl', ['x509', '-in', meter.cert, '-noout', '-ext', 'subjectAltName']);
    expect(stdout).toContain('URI:urn:tre:meter:m1');
    expect((await tre('pki', 'issue', '--dir', dir, '--role', 'meter', '--id', 'm1')).code).toBe(1);
    expect((await tre('pki', 'issue', '--dir', dir, '--role', 'meter', '--id', 'm1', '--force')).code).toBe(
      0,
    );
  });

  it('explains bad arguments', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tre-cli-'));
    const badRole = await tre('pki', 'issue', '--dir', dir, '--role', 'admin', '--id', 'x');
    expect(badRole.code).toBe(2);
    expect(badRole.stderr).toMatch(/Allowed choices are meter, dno, supplier, dsm, regulator/);
    const noCa = await tre('pki', 'issue', '--dir', dir, '--role', 'meter', '--id', 'x');
    expect(noCa.code).toBe(1);
    expect(noCa.stderr).toMatch(/tre pki init --dir/);
    await tre('pki', 'init', '--dir', join(dir, 'p'));
    const badId = await tre('pki', 'issue', '--dir', join(dir, 'p'), '--role', 'meter', '--id', 'm/1');
    expect(badId.stderr).toMatch(/not valid: use 1-64 characters/);
  });

  it('has --help and --version', async () => {
    expect((await tre('--help')).stdout).toMatch(/Examples:/);
    expect((await tre('--version')).stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
  });

  it('runs by name through the committed bin shim', async () => {
    const shim = fileURLToPath(new URL('../bin/tre.js', import.meta.url));
    const { stdout } = await run(process.execPath, [shim, '--version']);
    expect(stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
  });
});

describe('tre start', () => {
  it('logs host and port on listen and exits 0 on SIGTERM', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tre-cli-'));
    await tre('pki', 'init', '--dir', join(dir, 'pki'));
    const csr = join(dir, 'tre.csr');
    await tre('enroll', 'tls', '--pki', join(dir, 'tre-pki'), '--data', join(dir, 'data'), '--csr', csr);
    await tre(
      'pki',
      'sign-csr',
      '--dir',
      join(dir, 'pki'),
      '--role',
      'tre',
      '--id',
      'tre',
      '--csr',
      csr,
      '--out',
      join(dir, 'tre-pki', 'tre.crt'),
    );
    for (const f of ['ca.crt', 'crl.pem']) await copyFile(join(dir, 'pki', f), join(dir, 'tre-pki', f));
    const child = spawn(process.execPath, [
      treCli,
      'start',
      '--pki',
      join(dir, 'tre-pki'),
      '--data',
      join(dir, 'data'),
      '--port',
      '0',
    ]);
    let log = '';
    child.stderr.on('data', (d) => {
      log += d;
    });
    const listening = await new Promise<{ host: string; port: number }>((resolve, reject) => {
      child.stderr.on('data', () => {
        const line = log.split('\n').find((l) => l.includes('TRE listening'));
        if (line) resolve(JSON.parse(line) as { host: string; port: number });
      });
      child.once('exit', () => reject(new Error(`exited early: ${log}`)));
    });
    expect(listening.port).toBeGreaterThan(0);
    expect(listening.host).toBe('127.0.0.1');
    child.kill('SIGTERM');
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    expect(code).toBe(0);
    expect(log).toMatch(/TRE stopped/);
  });

  it('refuses boot PCRs outside 0-15 as a usage error, saying which and why', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tre-cli-'));
    for (const command of [['start'], ['attest-policy', '--out', join(dir, 'p.jws')]]) {
      const r = await tre(...command, '--pki', dir, '--boot-pcrs', '0,23');
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/boot PCR 23: boot PCRs are 0-15/);
    }
  });

  it('takes the shard options only with --cluster (measured), and all of them', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tre-cli-'));
    const alone = await tre('start', '--pki', dir, '--shard', 's1', '--nats', 'nats://127.0.0.1:4222');
    expect(alone.code).toBe(2);
    expect(alone.stderr).toMatch(/need --cluster \(being a shard is measured/);
    const partial = await tre('start', '--pki', dir, '--cluster', '--shard', 's1');
    expect(partial.code).toBe(2);
    expect(partial.stderr).toMatch(/--cluster needs --shard, --nats, --shards and --peer-policy/);
    const dotted = await tre('start', '--pki', dir, '--cluster', '--shard', 's.1');
    expect(dotted.code).toBe(2);
    expect(dotted.stderr).toMatch(/may not contain '\.'/);
    const noPolicy = await tre(
      'start',
      ...['--pki', join(dir, 'none'), '--cluster', '--shard', 's1', '--shards', 's1,s2'],
      ...['--nats', 'nats://127.0.0.1:1', '--peer-policy', join(dir, 'policy.jws')],
    );
    expect(noPolicy.code).toBe(1);
    expect(noPolicy.stderr).toMatch(/cannot read the peers' attestation policy .*tre attest-policy/);
  });

  it('says what to do when the PKI is missing', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tre-cli-'));
    const r = await tre('start', '--pki', join(dir, 'none'), '--port', '0');
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/tre enroll tls/);
  });
});

describe('tre registry', () => {
  it('imports a CSV and reports the line of a bad row', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tre-cli-'));
    const csv = join(dir, 'households.csv');
    const { writeFile } = await import('node:fs/promises');
    await writeFile(
      csv,
      'meterId,supplierId,dnoId,capacityW,account\nm1,s1,d1,9000,A-1\nm2,s1,d1,12000,A-2\n',
    );
    const ok = await tre('registry', 'import', '--data', join(dir, 'data'), '--file', csv);
    expect(ok.stdout).toMatch(/registered 2 households \(2 in total\)/);
    const add = await tre(
      'registry',
      'add',
      '--data',
      join(dir, 'data'),
      '--meter',
      'm3',
      '--supplier',
      's1',
      '--dno',
      'd1',
      '--capacity',
      '7000',
      '--account',
      'A-3',
    );
    expect(add.stdout).toMatch(/3 in total/);
    await writeFile(csv, 'meterId,supplierId,dnoId,capacityW,account\nm4,s1,d1,-5,A-4\n');
    const bad = await tre('registry', 'import', '--data', join(dir, 'data'), '--file', csv);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/households\.csv:2: capacityW/);
  });
});
