/** `tre start`: run the TRE broker until SIGTERM or Ctrl-C. */
import { AcceleratedClock, systemClock } from '@tre/protocol';
import type { Command } from 'commander';
import { createLogger } from '../log.js';
import { startTre } from '../tre.js';
import {
  type MonitoringFlags,
  measuredConfigOf,
  monitoringFrom,
  withMonitoringOptions,
} from './monitoring-options.js';
import { pcrList } from './tpm.js';

interface StartFlags extends MonitoringFlags {
  pki: string;
  data: string;
  host: string;
  port: number;
  logLevel: string;
  clockSpeed: number;
  tpm?: string;
  bootPcrs?: number[];
  clockEpoch?: number;
}

export function addStartCommand(program: Command): void {
  withMonitoringOptions(
    program
      .command('start')
      .description('run the TRE broker (SIGTERM or Ctrl-C stops it gracefully)')
      .option('--pki <dir>', 'PKI directory made by `tre pki init`', './pki')
      .option('--data <dir>', 'data directory (SQLite store)', './tre-data')
      .option('--host <host>', 'address to listen on', '127.0.0.1')
      .option(
        '--port <port>',
        'port to listen on; 0 picks a free one (the log says which)',
        (v) => Number.parseInt(v, 10),
        8883,
      )
      .option('--log-level <level>', 'pino log level', process.env.TRE_LOG_LEVEL ?? 'info')
      .option(
        '--tpm <tcti>',
        'the TPM: device:/dev/tpmrm0 (Pi HAT) or swtpm:host=127.0.0.1,port=N; needs <data>/tpm/ak.crt (tre pki endorse-ak)',
      )
      .option(
        '--boot-pcrs <list>',
        'with --tpm on a machine with measured boot: quote these boot PCRs too and seal the TLS key to them (e.g. 0,1,2,3,4,5,6,7)',
        pcrList,
      )
      .option(
        '--clock-speed <x>',
        'run the TRE clock x times faster than real time (demos and tests)',
        Number,
        1,
      )
      .option(
        '--clock-epoch <ms>',
        'real instant (ms since epoch) from which the faster clock runs; the same value continues one timeline across restarts',
        Number,
      ),
  ).action(async (o: StartFlags) => {
    const log = createLogger({ level: o.logLevel });
    const monitoring = monitoringFrom(o);
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
      monitoring,
      tpm: o.tpm ? { tcti: o.tpm, bootPcrs: o.bootPcrs } : undefined,
      measuredConfig: measuredConfigOf(monitoring),
      clock:
        o.clockSpeed === 1 ? systemClock : new AcceleratedClock(o.clockEpoch ?? Date.now(), o.clockSpeed),
    });
    const signal = await stopped; // already settled if the signal came during start-up
    log.info({ signal }, 'stopping');
    await tre.stop().catch((err: Error) => log.error({ err }, 'unclean stop'));
  });
}
