/**
 * `tre-party dsm cancel|modify`: the DSM changes its demand-response event: it attests the TRE
 * first, then sends the signed change (JWS with its own key, `issuedAt` now) and prints the TRE's
 * receipt; exit 1 when refused (with the reason: `UNKNOWN_EVENT`, `REPLAYED`, `EVENT_INVALID`, ...).
 */
import type { DrTerms, Receipt } from '@tre/protocol';
import { type Command, InvalidArgumentError } from 'commander';
import { Dsm } from '../parties/dsm.js';
import { type AttestOptions, asTrustedParty, withPartyOptions } from './party-attest.js';

interface ModifyOptions {
  windowStart?: string;
  windowEnd?: string;
  bidDeadline?: string;
  acceptBy?: string;
  reduction?: number;
  priceCap?: number;
}

const instant = (v: string): string => {
  if (Number.isNaN(Date.parse(v)))
    throw new InvalidArgumentError('an ISO 8601 instant, e.g. 2026-03-18T18:00:00Z');
  return new Date(v).toISOString();
};
const integer = (v: string): number => {
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 0) throw new InvalidArgumentError('a non-negative integer');
  return n;
};

/** The terms given on the command line (at least one). */
export function termsOf(o: ModifyOptions): DrTerms {
  const terms: DrTerms = {
    ...(o.windowStart !== undefined ? { windowStart: o.windowStart } : {}),
    ...(o.windowEnd !== undefined ? { windowEnd: o.windowEnd } : {}),
    ...(o.bidDeadline !== undefined ? { bidDeadline: o.bidDeadline } : {}),
    ...(o.acceptBy !== undefined ? { acceptBy: o.acceptBy } : {}),
    ...(o.reduction !== undefined ? { requestedReductionWh: o.reduction } : {}),
    ...(o.priceCap !== undefined ? { priceCapPerMWh: o.priceCap } : {}),
  };
  if (Object.keys(terms).length === 0)
    throw new Error('give at least one term to change (--window-start, --window-end, --bid-deadline, ...)');
  return terms;
}

async function asDsm(o: AttestOptions, send: (dsm: Dsm) => Promise<Receipt>): Promise<void> {
  await asTrustedParty(o, async ({ party, key }) => {
    const receipt = await send(await Dsm.withKey(party, o.id, key));
    if (o.json) console.log(JSON.stringify(receipt));
    else if (receipt.status === 'accepted')
      console.log(receipt.duplicate ? 'already applied' : receipt.message);
    else console.error(`refused: ${receipt.reason}: ${receipt.message}`);
    if (receipt.status !== 'accepted') process.exitCode = 1;
  });
}

export function addDsmCommands(program: Command): void {
  const dsm = program.command('dsm').description('as a DSM: change your demand-response events');
  withPartyOptions(
    dsm
      .command('cancel <eventId>')
      .description(
        'cancel your event: every bid is void; once accepted, no delivery is expected and every credit is reversed',
      ),
    ['dsm'],
  )
    .option('--json', 'print the receipt as JSON')
    .action((eventId: string, o: AttestOptions) => asDsm(o, (d) => d.cancel(eventId)));
  withPartyOptions(
    dsm
      .command('modify <eventId>')
      .description(
        'change the terms of your event: bidding opens again under them (give a bid deadline in the future), earlier bids are void, accepted credits reversed',
      ),
    ['dsm'],
  )
    .option('--window-start <instant>', 'new window start', instant)
    .option('--window-end <instant>', 'new window end', instant)
    .option('--bid-deadline <instant>', 'new bid deadline', instant)
    .option('--accept-by <instant>', 'new acceptance deadline', instant)
    .option('--reduction <Wh>', 'new requested reduction, Wh', integer)
    .option('--price-cap <perMWh>', 'new price cap, minor units per MWh', integer)
    .option('--json', 'print the receipt as JSON')
    .action((eventId: string, o: AttestOptions & ModifyOptions) =>
      asDsm(o, (d) => d.modify(eventId, termsOf(o))),
    );
}
