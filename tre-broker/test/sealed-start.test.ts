/**
 * Measured start against swtpm: the TRE's TLS and data keys are born sealed to its measurement
 * (and, with measured boot, to the boot PCRs). After a reboot, and after a plain restart (the
 * application PCR is reset and re-measured), the same TRE starts; a TRE whose configuration
 * changed, or that booted differently, cannot unseal its keys and refuses to start. An approved
 * update moves the keys with `reseal` under a whitelist naming both releases. Boot PCRs are quoted
 * and whitelisted: `meter-agent attest` names the PCR that differs from the reference device.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { type Swtpm, startSwtpm, Tpm } from '@tre/hardware';
import {
  APPLICATION_PCR,
  attestationPolicyFor,
  CertificateAuthority,
  createLogger,
  endorseAk,
  eventOf,
  measuredComponents,
  provisionTre,
  replayPcr,
  resealForRelease,
  startTre,
} from '@tre/tre-broker';
import { afterAll, describe, expect, it } from 'vitest';
import { meterAgent } from './support/run-cli.js';

/** What the boot test's TRE measures as its configuration. */
const CONFIG = { boot: true };

const run = promisify(execFile);

let dir = '';
afterAll(async () => rm(dir, { recursive: true, force: true }));

/** The TRE's keys made and sealed on its machine (`tre enroll tls`), signed by the regulator. */
async function enroll(
  swtpm: Swtpm,
  ca: CertificateAuthority,
  config: Record<string, unknown>,
  bootPcrs: number[] = [],
) {
  await provisionTre(ca, {
    tcti: swtpm.tcti,
    dataDir: join(dir, 'data'),
    pkiDir: join(dir, 'tre-pki'),
    treId: 'tre',
    hosts: [],
    config,
    bootPcrs,
    force: true,
  });
}

async function startOn(
  swtpm: Swtpm,
  ca: CertificateAuthority,
  measuredConfig: Record<string, unknown>,
  bootPcrs: number[] = [],
) {
  return startTre({
    pkiDir: join(dir, 'tre-pki'),
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

describe('sealed TLS and data keys', () => {
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
      await enroll(swtpm, ca, { release: 1 }); // the key is born sealed: no plaintext copy anywhere
      expect(await outcome(startOn(swtpm, ca, { release: 1 }))).toBe('started');
      expect(await outcome(startOn(swtpm, ca, { release: 1 }))).toBe('started'); // restart, no reboot
    });
    await boot(async (swtpm) => {
      expect(await outcome(startOn(swtpm, ca, { release: 1 }))).toBe('started'); // after a reboot: unseals
      expect(await outcome(startOn(swtpm, ca, { release: 2 }))).toMatch(
        /measurement .* differs .* refuses to start.*tre enroll reseal/,
      );
    });
  });

  it('an approved update: `reseal` on release 1 under a whitelist naming 1 and 2; then only 2 starts', {
    timeout: 60_000,
  }, async () => {
    dir = await mkdtemp(join(tmpdir(), 'tre-reseal-'));
    const { ca } = await CertificateAuthority.init(join(dir, 'pki'));
    const swtpm = await startSwtpm();
    try {
      await enroll(swtpm, ca, { release: 1 });
      // PCR 23 of release n as a TRE measures it: with its TPM open (the TCTI library is mapped).
      const pcrs = new Map<number, string>();
      const tpm = Tpm.open({ tcti: swtpm.tcti, keystoreDir: join(dir, 'reference-tpm') });
      for (const n of [1, 2]) pcrs.set(n, replayPcr(measuredComponents({ release: n }).map(eventOf)));
      tpm.close();
      const release = (n: number) => pcrs.get(n)!;
      const whitelist = (accept: string[]) =>
        ca.signAsRegulator('attestationPolicy', {
          ...attestationPolicyFor({ release: 2 }, { policyId: 'r2' }),
          pcrValues: { [APPLICATION_PCR]: accept },
        });
      const reseal = async (config: Record<string, unknown>, accept: string[]) =>
        resealForRelease({
          tcti: swtpm.tcti,
          dataDir: join(dir, 'data'),
          config,
          bootPcrs: [],
          whitelistJws: await whitelist(accept),
          caCertPem: await readFile(join(dir, 'tre-pki', 'ca.crt'), 'utf8'),
        }).then(
          (r) => r,
          (err: Error) => err.message,
        );
      // A whitelist that does not name the running release, or names nothing else, moves nothing.
      expect(await reseal({ release: 1 }, [release(2)])).toMatch(/does not name this release/);
      expect(await reseal({ release: 1 }, [release(1)])).toMatch(/nothing to migrate to/);
      // Release 2 cannot migrate keys it cannot unseal.
      expect(await reseal({ release: 2 }, [release(1), release(2)])).toMatch(
        /does not name this release|cannot unseal/,
      );
      expect(await reseal({ release: 1 }, [release(1), release(2)])).toEqual({
        from: release(1),
        to: release(2),
      });
      expect(await outcome(startOn(swtpm, ca, { release: 2 }))).toBe('started');
      expect(await outcome(startOn(swtpm, ca, { release: 1 }))).toMatch(/refuses to start/);
    } finally {
      await swtpm.stop();
    }
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
      await enroll(swtpm, ca, CONFIG, [0]);
      const running = await startOn(swtpm, ca, CONFIG, [0]);
      await running.registry.upsert([
        { meterId: 'v1', supplierId: 's1', dnoId: 'd1', capacityW: 10_000, account: 'a1' },
      ]);
      const meter = await ca.issue('meter', 'v1');
      // The regulator whitelists this device as booted (the reference device) and this TRE build.
      const policy = join(dir, 'policy.jws');
      const pcr0 = (await run('tpm2_pcrread', ['-T', swtpm.tcti, 'sha256:0'])).stdout.match(
        /0x([0-9A-F]{64})/,
      )![1]!;
      await writeFile(
        policy,
        await ca.signAsRegulator(
          'attestationPolicy',
          attestationPolicyFor(CONFIG, { policyId: 'boot', bootPcrValues: { 0: pcr0.toLowerCase() } }),
        ),
      );
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
      expect(await outcome(startOn(swtpm, ca, CONFIG, [0]))).toMatch(/refuses to start/);
    } finally {
      await swtpm.stop();
    }
  });
});
