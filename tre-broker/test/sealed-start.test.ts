/**
 * The TRE's TLS key is sealed to its measurement: after a (simulated) reboot of the TPM the same
 * TRE starts, a TRE whose configuration changed cannot unseal the key and refuses to start.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startSwtpm } from '@tre/hardware';
import { CertificateAuthority, createLogger, endorseAk, startTre } from '@tre/tre-broker';
import { afterAll, describe, expect, it } from 'vitest';

let dir = '';
afterAll(async () => rm(dir, { recursive: true, force: true }));

describe('sealed TLS key', () => {
  it('a changed TRE refuses to start', { timeout: 60_000 }, async () => {
    dir = await mkdtemp(join(tmpdir(), 'tre-sealed-'));
    const { ca } = await CertificateAuthority.init(join(dir, 'pki'));
    const start = async (measuredConfig: Record<string, unknown>) => {
      const swtpm = await startSwtpm({ dir: join(dir, 'tpm-state') }); // a fresh process: PCRs reset, keys kept (a reboot)
      try {
        const tre = await startTre({
          pkiDir: join(dir, 'pki'),
          dataDir: join(dir, 'data'),
          port: 0,
          log: createLogger({ level: 'silent' }),
          measuredConfig,
          tpm: {
            tcti: swtpm.tcti,
            akCertificate: (tpm) => endorseAk(tpm, ca, 'tre', { allowUncertifiedEk: true }),
          },
        });
        await tre.stop();
        return 'started';
      } catch (err) {
        return (err as Error).message;
      } finally {
        await swtpm.stop();
      }
    };
    expect(await start({ release: 1 })).toBe('started'); // first start: seals
    expect(await start({ release: 1 })).toBe('started'); // after a reboot: unseals
    expect(await start({ release: 2 })).toMatch(/measurement .* differs .* refuses to start/);
  });
});
