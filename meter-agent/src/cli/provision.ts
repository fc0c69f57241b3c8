/**
 * `meter-agent provision request|install|enroll`: the device identity (the key never leaves the
 * device), by hand through the regulator or zero-touch with a one-time token.
 */
import { readFile } from 'node:fs/promises';
import { type Command, InvalidArgumentError, Option } from 'commander';
import { createRequest, enrollDevice, installCertificate } from '../device-identity.js';

function positive(what: string, integer: boolean): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!(n > 0) || (integer && !Number.isInteger(n)))
      throw new InvalidArgumentError(`${what} (got ${value})`);
    return n;
  };
}

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
  provision
    .command('enroll')
    .description(
      "zero-touch, on first boot: make the device key (if absent), enroll with the one-time token at the regulator's EST service over HTTPS verified against --ca, check and write the certificate, delete the token file; retries connection errors with backoff, never a refusal",
    )
    .requiredOption('--server <url>', 'the enrollment service, https://host:port (tre pki serve-enrollment)')
    .requiredOption(
      '--token-file <file>',
      'the one-time enrollment token (tre pki token); deleted once enrolled',
    )
    .requiredOption('--meter <id>', 'meter id (the token was made for it)')
    .requiredOption('--key <file>', 'device private key (created 0600 if absent)')
    .requiredOption('--cert <file>', 'where to write the certificate')
    .requiredOption(
      '--ca <file>',
      'regulator root certificate (the server and the certificate must chain to it)',
    )
    .addOption(
      new Option('--attempts <n>', 'tries in all on connection errors and 5xx')
        .argParser(positive('--attempts must be a whole number above 0', true))
        .default(10),
    )
    .addOption(
      new Option('--retry-delay <seconds>', 'wait after the first failed try, doubled after each up to 60 s')
        .argParser(positive('--retry-delay must be a number of seconds above 0', false))
        .default(2),
    )
    .action(
      async (o: {
        server: string;
        tokenFile: string;
        meter: string;
        key: string;
        cert: string;
        ca: string;
        attempts: number;
        retryDelay: number;
      }) => {
        await enrollDevice({
          server: o.server,
          tokenFile: o.tokenFile,
          meterId: o.meter,
          keyPath: o.key,
          certPath: o.cert,
          caPath: o.ca,
          attempts: o.attempts,
          retryDelayMs: o.retryDelay * 1000,
        });
      },
    );
}
