/** `meter-agent provision request|install`: the device identity (the key never leaves the device). */
import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { createRequest, installCertificate } from '../device-identity.js';

export function addProvisionCommands(program: Command): void {
  const provision = program
    .command('provision')
    .description('device identity: the key is made here and never leaves the device');
  provision
    .command('request')
    .description('create the device key (if absent) and a certificate request for the regulator')
    .requiredOption('--meter <id>', 'meter id')
    .requiredOption('--key <file>', 'device private key (created 0600 if absent)')
    .requiredOption('--csr <file>', 'where to write the request')
    .action(async (o: { meter: string; key: string; csr: string }) => {
      await createRequest(o.meter, o.key, o.csr);
      console.log(
        `${o.csr}: give it to the regulator: tre pki sign-csr --csr ${o.csr} --role meter --id ${o.meter} --out device.crt`,
      );
    });
  provision
    .command('install')
    .description('check and install the signed certificate')
    .requiredOption('--meter <id>', 'meter id')
    .requiredOption('--key <file>', 'device private key')
    .requiredOption('--cert <file>', 'certificate signed by the regulator')
    .requiredOption('--ca <file>', 'regulator root certificate')
    .requiredOption('--out <file>', 'where to install the certificate')
    .action(async (o: { meter: string; key: string; cert: string; ca: string; out: string }) => {
      await installCertificate(
        o.meter,
        o.key,
        await readFile(o.cert, 'utf8'),
        await readFile(o.ca, 'utf8'),
        o.out,
      );
      console.log(`installed ${o.out}`);
    });
}
