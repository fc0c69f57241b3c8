/**
 * The CA's CRL, as the broker sees it: parsed and signature-checked against the root, reloaded
 * when the file changes so a revocation takes effect on live sessions within seconds.
 */
import { unwatchFile, watchFile } from 'node:fs';
import { readFile } from 'node:fs/promises';
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';

export function normaliseSerial(serial: string): string {
  return serial.toLowerCase().replace(/^0+(?=.)/, '');
}

export class RevocationList {
  private serials = new Set<string>();
  private pem = '';

  private constructor(
    private readonly path: string,
    private readonly caCertificate: x509.X509Certificate,
  ) {}

  static async load(path: string, caCertificatePem: string): Promise<RevocationList> {
    const list = new RevocationList(path, new x509.X509Certificate(caCertificatePem));
    await list.reload();
    return list;
  }

  /** The CRL in PEM, for the TLS layer. */
  get crlPem(): string {
    return this.pem;
  }

  isRevoked(serial: string): boolean {
    return this.serials.has(normaliseSerial(serial));
  }

  /** Re-reads the file; a CRL that is not signed by the CA is refused and the old list kept. */
  async reload(): Promise<boolean> {
    const pem = await readFile(this.path, 'utf8');
    if (pem === this.pem) return false;
    const crl = new x509.X509Crl(pem);
    const ok = await crl.verify({ publicKey: await this.caCertificate.publicKey.export() });
    if (!ok)
      throw new Error(`${this.path} is not signed by the regulator CA; keeping the previous revocation list`);
    this.serials = new Set(crl.entries.map((e) => normaliseSerial(e.serialNumber)));
    this.pem = pem;
    return true;
  }

  /** Polls the file (cheap, and works on every filesystem) and calls `onChange` after a reload. */
  watch(intervalMs: number, onChange: () => void, onError: (err: Error) => void): () => void {
    const listener = () => {
      this.reload().then(
        (changed) => {
          if (changed) onChange();
        },
        (err: Error) => onError(err),
      );
    };
    watchFile(this.path, { interval: intervalMs, persistent: false }, listener);
    return () => unwatchFile(this.path, listener);
  }
}
