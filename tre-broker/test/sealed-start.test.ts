/**
 * Measured start against swtpm: the TRE's TLS key is sealed to its measurement (and, with measured
 * boot, to the boot PCRs). After a reboot, and after a plain restart (the application PCR is reset
 * and re-measured), the same TRE starts; a TRE whose configuration changed, or that booted
 * differently, cannot unseal its key and refuses to start. Boot PCRs are quoted and whitelisted:
 * `meter-agent attest` names the PCR that differs from the regulator's reference device.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rename, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { type Swtpm, startSwtpm } from '@tre/hardware';
import { CertificateAuthority, createLogger, endorseAk, startTre } from '@tre/tre-broker';
import { afterAll, describe, expect, it } from 'vitest';
import { meterAgent, tre } from './support/run-cli.js';

const run = promisify(execFile);

let dir = '';
/** What `tre start` measures with its default options (`tre attest-policy` whitelists the same by default). */
const TRE_START_DEFAULTS = {
  monitoring: {
    minGroupSize: 50,
    epsilon: [1, 1],
    dailyBudget: 100,
    rollingBudget: 1_500,
    releaseMinutes: 30,
  },
};
afterAll(async () => rm(dir, { recursive: true, force: true }));

async function startOn(
  swtpm: Swtpm,
  ca: CertificateAuthority,
  measuredConfig: Record<string, unknown>,
  bootPcrs: number[] = [],
) {
  return startTre({
    pkiDir: join(dir, 'pki'),
    dataDir: join(dir, 'data'),
    port: 0,
    log: createLogger({ level: 'silent' }),
    measuredConfig,
    tpm: {
      tcti: swtpm.tcti,
      akCertificate: (tpm) => endorseAk(tpm, ca, 'tre', { allowUncertifiedEk: true }),
      bootPcrs,
    },
  });
}

const outcome = (p: Promise<{ stop(): Promise<void> }>) =>
  p.then(
    async (t) => {
      await t.stop();
      return 'started';
    },
    (err: Error) => err.message,
  );

describe('sealed TLS key', () => {
  it('a changed TRE refuses to start; a restart or reboot of the same TRE does not', {
    timeout: 60_000,
  }, async () => {
    dir = await mkdtemp(join(tmpdir(), 'tre-sealed-'));
    const { ca } = await CertificateAuthority.init(join(dir, 'pki'));
    const boot = async (use: (swtpm: Swtpm) => Promise<void>) => {
      const swtpm = await startSwtpm({ dir: join(dir, 'tpm-state') }); // a fresh process: PCRs reset, keys kept (a reboot)
      try {
        await use(swtpm);
      } finally {
        await swtpm.stop();
      }
    };
    await boot(async (swtpm) => {
      expect(await outcome(startOn(swtpm, ca, { release: 1 }))).toBe('started'); // first start: seals
      expect(await outcome(startOn(swtpm, ca, { release: 1 }))).toBe('started'); // restart, no reboot
    });
    // Sealed: the plain key leaves the machine; the TRE starts from the key only its TPM can unseal.
    await rename(join(dir, 'pki', 'tre.key'), join(dir, 'tre.key.offline'));
    await boot(async (swtpm) => {
      expect(await outcome(startOn(swtpm, ca, { release: 1 }))).toBe('started'); // after a reboot: unseals
      expect(await outcome(startOn(swtpm, ca, { release: 2 }))).toMatch(
        /measurement .* differs .* refuses to start.*put the TRE key back/,
      );
    });
  });

  it('measured boot: boot PCRs are quoted, whitelisted and sealed to', { timeout: 60_000 }, async () => {
    dir = await mkdtemp(join(tmpdir(), 'tre-boot-'));
    const { ca } = await CertificateAuthority.init(join(dir, 'pki'));
    const swtpm = await startSwtpm();
    try {
      // What firmware and boot loader would do on a Pi with measured boot: extend PCR 0.
      const firmware = (byte: string) =>
        run('tpm2_pcrextend', [
          '-T',
          `swtpm:host=127.0.0.1,port=${swtpm.port}`,
          `0:sha256=${byte.repeat(32)}`,
        ]);
      await firmware('11');
      const running = await startOn(swtpm, ca, TRE_START_DEFAULTS, [0]);
      await running.registry.upsert([
        { meterId: 'v1', supplierId: 's1', dnoId: 'd1', capacityW: 10_000, account: 'a1' },
      ]);
      const meter = await ca.issue('meter', 'v1');
      // The regulator whitelists this device as booted (the reference device) and this TRE build.
      const policy = join(dir, 'policy.jws');
      const signed = await tre(
        'attest-policy',
        '--pki',
        join(dir, 'pki'),
        '--out',
        policy,
        '--tpm',
        swtpm.tcti,
        '--boot-pcrs',
        '0',
      );
      expect(signed.code).toBe(0);
      expect(signed.stdout).toMatch(/PCR 0 = [0-9a-f]{64} \(boot\)/);
      const attest = () =>
        meterAgent(
          'attest',
          '--tre',
          `mqtts://127.0.0.1:${running.port}`,
          '--meter',
          'v1',
          '--cert',
          meter.cert,
          '--key',
          meter.key,
          '--ca',
          meter.ca,
          '--policy',
          policy,
          '--json',
        );
      const trusted = await attest();
      expect(trusted.code).toBe(0);
      expect(JSON.parse(trusted.stdout)).toMatchObject({ trusted: true });

      await firmware('22'); // the machine now reports another boot
      const refused = await attest();
      expect(refused.code).not.toBe(0);
      expect(JSON.parse(refused.stdout)).toMatchObject({
        trusted: false,
        check: 'whitelist',
        reason: expect.stringMatching(/PCR 0/),
      });
      await running.stop();
      // Its TLS key was sealed to the boot it measured: with another boot it cannot start.
      expect(await outcome(startOn(swtpm, ca, TRE_START_DEFAULTS, [0]))).toMatch(/refuses to start/);
    } finally {
      await swtpm.stop();
    }
  });
});
