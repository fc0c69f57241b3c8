/**
 * `tre cluster`: a local cluster of TRE shards for development (cluster/dev-cluster.ts) until
 * Ctrl-C or SIGTERM; progress and the shards' log lines on stderr, then a summary on stdout of
 * where everything is and how to use it.
 */
import { join, resolve } from 'node:path';
import { type Command, CommanderError, InvalidArgumentError } from 'commander';
import { type DevCluster, DevClusterError, LOG_LEVELS, startDevCluster } from '../cluster/dev-cluster.js';
import { DEFAULT_LEASE_TTL_MS } from '../cluster/take-shard.js';

interface ClusterFlags {
  dir: string;
  shards: number;
  standbys: number;
  leaseTtl?: number;
  natsNodes: number;
  basePort: number;
  logLevel: string;
  reprovision?: boolean;
  json?: boolean;
}

function wholeNumber(v: string): number {
  if (!/^\d+$/.test(v)) throw new InvalidArgumentError(`"${v}" is not a whole number`);
  return Number(v);
}

function logLevel(v: string): string {
  if (!(v in LOG_LEVELS)) throw new InvalidArgumentError(`one of ${Object.keys(LOG_LEVELS).join(', ')}`);
  return v;
}

/** The summary as a machine reads it (`--json`). */
export function summaryJson(c: DevCluster, dir: string) {
  const tre = ({ name, url, pid, tcti, metricsUrl }: DevCluster['shards'][number]['standbys'][number]) => ({
    name,
    url,
    pid,
    tcti,
    metricsUrl,
  });
  return {
    dir,
    shards: c.shards.map((s) => ({
      ...tre(s),
      // With standbys: which TRE serves now, and every endpoint in failover order.
      ...(s.standbys.length > 0
        ? { primary: s.current()?.name, endpoints: s.endpoints, standbys: s.standbys.map(tre) }
        : {}),
    })),
    ...(c.leaseTtlMs === undefined ? {} : { leaseTtlMs: c.leaseTtlMs }),
    regulatorDir: c.regulatorDir,
    caFile: c.caFile,
    crlFile: c.crlFile,
    policyFile: c.policyFile,
    pcr: c.pcr,
    nats: { urls: c.nats.urls, admin: c.admin },
  };
}

/** What runs where and how to use it, for a person. */
export function summaryText(c: DevCluster, dir: string): string {
  const reg = c.regulatorDir;
  const first = c.shards[0]!;
  const failover = c.shards.some((s) => s.standbys.length > 0);
  const tres = c.shards.flatMap((s) => [s, ...s.standbys]);
  const width = Math.max(...tres.map((s) => s.url.length));
  const nameWidth = Math.max(...tres.map((s) => s.name.length));
  const client = (role: string, id: string) => {
    const base = join(reg, 'clients', `${role}-${id}`);
    return `--cert ${base}.crt --key ${base}.key --ca ${c.caFile} --crl ${c.crlFile} --policy ${c.policyFile}`;
  };
  const line = (t: (typeof tres)[number], role: string) =>
    `  ${t.name.padEnd(nameWidth)}  ${t.url.padEnd(width)}  pid ${t.pid}${role}${t.metricsUrl ? `  metrics ${t.metricsUrl}` : ''}`;
  const shards = failover
    ? [
        `Shards, MQTT 3.1.1 over mutual TLS (a meter connects to its own shard only; parties to any), each with`,
        `standbys that follow its journal and take over when its primary stops (lease TTL ${(c.leaseTtlMs ?? DEFAULT_LEASE_TTL_MS) / 1000} s):`,
        ...c.shards.flatMap((s) => {
          const now = s.current();
          return [s, ...s.standbys].map((t) =>
            line(
              t,
              now?.name === t.name ? '  primary now' : `  standby of ${s.name} (listens once it takes over)`,
            ),
          );
        }),
        '',
        "Endpoints per shard in failover order (a meter agent's tre.endpoints; a party may list them too):",
        ...c.shards.map((s) => `  ${s.name.padEnd(nameWidth)}  ${s.endpoints.join(',')}`),
      ]
    : [
        'Shards, MQTT 3.1.1 over mutual TLS (a meter connects to its own shard only; parties to any):',
        ...c.shards.map((s) => line(s, '')),
      ];
  return [
    `TRE cluster of ${c.shards.length} shard${c.shards.length === 1 ? '' : 's'} running (development: keys sealed on swtpm, everything on loopback). Ctrl-C stops it; ${dir} keeps it for the next run.`,
    '',
    ...shards,
    '',
    `Regulator PKI:  ${reg}`,
    `  certificates: tre pki issue --dir ${reg} --role meter --id m1   (or dno, supplier, dsm, regulator)`,
    `Whitelist:      ${c.policyFile}   (PCR 23 ${c.pcr.slice(0, 16)}…; agents and parties attest a shard against it)`,
    `  e.g.          meter-agent attest --tre ${first.url} --meter m1 ${client('meter', 'm1')}`,
    `NATS:           ${c.nats.urls.join(',')}`,
    `  admin:        ${c.admin.cert} (key ${c.admin.key})`,
    '',
    'Households: each lives in one shard. The regulator registers them with a signed update sent to any',
    'shard, which passes it on; the CSV names the shard in an optional last column:',
    '  meterId,supplierId,dnoId,capacityW,account,shard',
    `  m1,s1,d1,10000,acc-m1,${first.name}`,
    `  tre pki issue --dir ${reg} --role regulator --id r1`,
    `  tre-party registry --role regulator --id r1 --tre ${first.url} ${client('regulator', 'r1')} --file households.csv`,
    '',
  ].join('\n');
}

export function addClusterCommand(program: Command): void {
  program
    .command('cluster')
    .description(
      'development: run a cluster of TRE shards on this machine (a software TPM each, 3 NATS servers, one `tre start --cluster` per shard and per standby) until Ctrl-C',
    )
    .argument(
      '[tre-options...]',
      'after --: `tre start` options for every shard, e.g. -- --min-group-size 5 --clock-speed 60 (measured: the whitelist is made for them)',
    )
    .option(
      '--dir <dir>',
      'where the cluster keeps its PKI, TPM state, keys and stores (reused by the next run)',
      './tre-cluster',
    )
    .option('--shards <n>', 'how many shards, named s1..sN', wholeNumber, 3)
    .option(
      '--standbys <k>',
      "standby TREs per shard (s1-b, s1-c, ...: a TPM and sealed keys of their own, the shard's identity) that follow its journal and take over when its primary stops; 0: no journal, no failover",
      wholeNumber,
      0,
    )
    .option(
      '--lease-ttl <ms>',
      `with --standbys: the TTL of each shard's lease, how long a standby waits after its primary stopped renewing it (default ${DEFAULT_LEASE_TTL_MS})`,
      wholeNumber,
    )
    .option('--nats-nodes <n>', 'how many NATS servers', wholeNumber, 3)
    .option(
      '--base-port <port>',
      'shard sK listens on port+K-1, its J-th standby on port+J*shards+K-1 (default 0: free ports, the summary says which)',
      wholeNumber,
      0,
    )
    .option(
      '--log-level <level>',
      "which of the shards' and NATS servers' log lines to show; the shards log at their own --log-level (info unless given after --)",
      logLevel,
      'info',
    )
    .option(
      '--reprovision',
      'when keys sealed to another build cannot be re-sealed (e.g. Node changed): new sealed keys for those shards (their stores, unreadable without the old keys, are moved aside)',
    )
    .option('--json', 'print the summary as one JSON object on stdout (progress stays on stderr)')
    .addHelpText(
      'after',
      `
For development and benchmarks only: each shard's keys are sealed on a software TPM (swtpm) whose
state is a directory under --dir, the regulator's CA key sits beside it, and everything listens
on loopback. In production each shard is its own machine with a hardware TPM, running
\`tre start --cluster --shard S --nats URLS --shards S1,S2,.. --peer-policy FILE --tpm device:/dev/tpmrm0\`
after \`tre enroll\` on it and \`tre pki endorse-ak\` / \`sign-csr\` / \`attest-policy --cluster\` at the
regulator, against NATS servers of its own; the regulator's directory never leaves the regulator.

Kept in --dir: regulator/ (CA, issued certificates), policy.jws (the whitelist, rewritten each run),
nats/ and nats-tls/, release/ (the snapshot of the build the shards run), and per shard sN/swtpm
(TPM state), sN/pki (certificate), sN/data (AK certificate, sealed keys, the store), and the same
for each standby (sN-b, ...). A rebuild
takes effect at the next start: the build the keys are sealed to re-seals them to the new one
(\`tre enroll reseal\`, as for an approved update) and the stores stay readable. When that cannot
be done (e.g. Node changed), --reprovision makes new keys and moves the old stores aside.

Failover (--standbys K): the regulator, as NATS admin, makes each shard's journal stream and lease
bucket (R3 on 3 or more NATS servers, else R1), and each shard gets K standby TREs, started once
the primaries serve. The summary lists each shard's endpoints in failover order (for an agent's
tre.endpoints) and which TRE is primary now. When a primary dies, tre cluster says so and which
standby takes over (it serves on its own port once the lease expired, within --lease-ttl), then
that it did; the cluster runs on and nothing is restarted (a shard with no standby left is down
until the next start).

Examples:
  tre cluster --dir ./tre-cluster
  tre cluster --dir ./tre-cluster --shards 2 --base-port 18883 -- --min-group-size 5
  tre cluster --dir ./tre-cluster --shards 2 --standbys 1 --lease-ttl 3000
  tre cluster --dir ./tre-cluster --json > cluster.json      (for scripts; Ctrl-C or SIGTERM stops it)`,
    )
    .action(async (treArgs: string[], o: ClusterFlags) => {
      const progress = (line: string) => console.error(`tre cluster: ${line}`);
      const abort = new AbortController();
      let onSignal: (signal: NodeJS.Signals) => void = () => {};
      const stopped = new Promise<NodeJS.Signals>((resolve) => {
        onSignal = (signal) => {
          abort.abort();
          resolve(signal);
        };
      });
      // Taken from the start (a Ctrl-C while starting stops what started) and kept (a second one waits too).
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
      try {
        let cluster: DevCluster;
        try {
          cluster = await startDevCluster({
            dir: o.dir,
            shards: o.shards,
            standbys: o.standbys,
            leaseTtlMs: o.leaseTtl,
            natsNodes: o.natsNodes,
            basePort: o.basePort,
            treArgs,
            reprovision: o.reprovision,
            logLevel: o.logLevel,
            log: (line) => console.error(line),
            progress,
            signal: abort.signal,
          });
        } catch (err) {
          if (err instanceof DevClusterError && err.code === 'ABORTED') {
            progress('interrupted while starting: stopped what had started');
            return;
          }
          if (err instanceof DevClusterError && err.code === 'INVALID_ARGUMENT')
            throw new CommanderError(2, 'tre.cluster', err.message);
          throw err;
        }
        const dir = resolve(o.dir);
        console.log(o.json ? JSON.stringify(summaryJson(cluster, dir)) : summaryText(cluster, dir));
        const signal = await stopped;
        progress(
          `${signal}: stopping the ${o.standbys > 0 ? 'standbys, then the primaries' : 'shards'}, then NATS and the software TPMs`,
        );
        await cluster.stop();
        progress(`stopped; ${o.dir} keeps the cluster for the next run`);
      } finally {
        process.removeListener('SIGINT', onSignal);
        process.removeListener('SIGTERM', onSignal);
      }
    });
}
