/** `tre start`: run the TRE broker until SIGTERM or Ctrl-C. */
import { AcceleratedClock, systemClock } from '@tre/protocol';
import { type Command, CommanderError, InvalidArgumentError } from 'commander';
import { createLogger } from '../log.js';
import { type ListenAddress, parseListenAddress } from '../metrics/metrics-server.js';
import { startTre } from '../tre.js';
import { measuredConfigOf, type TreFlags, treSettingsFrom, withTreOptions } from './tre-options.js';

interface StartFlags extends TreFlags {
  pki: string;
  data: string;
  host: string;
  port: number;
  tpm?: string;
  metricsListen?: ListenAddress;
}

function listenAddress(text: string): ListenAddress {
  try {
    return parseListenAddress(text);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

export function addStartCommand(program: Command): void {
  withTreOptions(
    program
      .command('start')
      .description('run the TRE broker (SIGTERM or Ctrl-C stops it gracefully)')
      .option(
        '--pki <dir>',
        "the TRE's certificate directory: ca.crt, crl.pem and tre.crt (signed from `tre enroll tls`)",
        './tre-pki',
      )
      .option('--data <dir>', 'data directory (encrypted SQLite store, sealed keys)', './tre-data')
      .option('--host <host>', 'address to listen on', '127.0.0.1')
      .option(
        '--port <port>',
        'port to listen on; 0 picks a free one (the log says which)',
        (v) => Number.parseInt(v, 10),
        8883,
      )
      .option(
        '--metrics-listen <host:port>',
        'with --metrics: serve /metrics (Prometheus), /healthz and /readyz over plain HTTP there',
        listenAddress,
        parseListenAddress('127.0.0.1:9464'),
      )
      .option(
        '--tpm <tcti>',
        'the TPM: device:/dev/tpmrm0 (Pi HAT) or swtpm:host=127.0.0.1,port=N; needs `tre enroll` done with the same options',
      ),
  ).action(async (o: StartFlags, command: Command) => {
    const settings = treSettingsFrom(o);
    if (!settings.metrics && command.getOptionValueSource('metricsListen') === 'cli')
      throw new CommanderError(
        2,
        'tre.metrics',
        '--metrics-listen needs --metrics (served metrics are measured: give --metrics to tre enroll and tre attest-policy too)',
      );
    const log = createLogger({ level: settings.logLevel });
    // Signals are taken from the start, so a stop during start-up is still graceful.
    const stopped = new Promise<string>((resolve) => {
      process.once('SIGTERM', () => resolve('SIGTERM'));
      process.once('SIGINT', () => resolve('SIGINT'));
    });
    const tre = await startTre({
      pkiDir: o.pki,
      dataDir: o.data,
      host: o.host,
      port: o.port,
      log,
      metrics: settings.metrics ? o.metricsListen : undefined,
      monitoring: settings.monitoring,
      tpm: o.tpm ? { tcti: o.tpm, bootPcrs: settings.bootPcrs } : undefined,
      measuredConfig: measuredConfigOf(settings),
      clock:
        settings.clockSpeed === 1
          ? systemClock
          : new AcceleratedClock(settings.clockEpoch ?? Date.now(), settings.clockSpeed),
    });
    const signal = await stopped; // already settled if the signal came during start-up
    log.info({ signal }, 'stopping');
    await tre.stop().catch((err: Error) => log.error({ err }, 'unclean stop'));
  });
}
