/**
 * The store encrypted at rest (store/store.ts): readings, a household and a DR bid (the pseudonym
 * map) written through their table owners; every file of the data directory (tre.sqlite, -wal,
 * -shm), copied while the TRE runs and again after it stopped, holds none of their bytes and no
 * SQLite header. The same writes to a plaintext store do contain them (so the needles are the real
 * on-disk encodings). Another key, no key, or a key on a plaintext file: a clear STORE_KEY_MISMATCH,
 * the files left unchanged; the right key reads everything back, the WAL included.
 */
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DrEvent } from '@tre/protocol';
import { afterAll, describe, expect, it } from 'vitest';
import { DrBook } from '../src/demand-response/dr-book.js';
import { ReadingStore } from '../src/ingest/reading-store.js';
import { HouseholdRegistry } from '../src/registry/household-registry.js';
import { Store, StoreError } from '../src/store/store.js';
import { testDataKey } from './support/flow-context.js';

const METER = 'meter-zq9x7k4w';
const ACCOUNT = 'acct-vb3n8m2p';
const EVENT = 'event-hj6t2r9y';
const BID = 'bid-kw4s7d1f';
const PSEUDONYM = 'pseudo-u5e8c3x0g7';
const CONTENT_HASH = 'hash-9f3a7c1e5b2d';
const ENERGY_WH = 0x5ec7e7a1; // a 32-bit integer on disk
const REGISTER_WH = 0x3a5e_c7e7_a1b2; // a 48-bit integer on disk
const T0 = Date.UTC(2026, 6, 1, 8);

const root = mkdtempSync(join(tmpdir(), 'tre-store-enc-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
let dirs = 0;
const newDir = () => join(root, `d${dirs++}`);
const otherKey = () => Buffer.alloc(32, 0xa5);

/** A plaintext store in `dir` (no key: what the store was before, and what openIn must refuse). */
function plainStoreIn(dir: string): Store {
  mkdirSync(dir, { recursive: true });
  return new Store(join(dir, 'tre.sqlite'));
}

/** What a copy of the data directory would reveal, as byte patterns. */
function needles(): [string, Buffer][] {
  const int = (n: number, bytes: number) => {
    const b = Buffer.alloc(bytes);
    b.writeUIntBE(n, 0, bytes);
    return b;
  };
  return [
    ['SQLite header', Buffer.from('SQLite format 3')],
    ...[METER, ACCOUNT, EVENT, BID, PSEUDONYM, CONTENT_HASH].map((s): [string, Buffer] => [
      s,
      Buffer.from(s),
    ]),
    ['energy (int32)', int(ENERGY_WH, 4)],
    ['register (int48)', int(REGISTER_WH, 6)],
    ['energy (decimal)', Buffer.from(String(ENERGY_WH))],
    ['bid quantity (decimal)', Buffer.from('7654321')],
  ];
}

/** Every file of the directory, as raw bytes. */
function filesOf(dir: string): Map<string, Buffer> {
  return new Map(readdirSync(dir).map((f) => [f, readFileSync(join(dir, f))]));
}

function found(files: Map<string, Buffer>): string[] {
  const hits: string[] = [];
  for (const [file, bytes] of files)
    for (const [what, needle] of needles()) if (bytes.includes(needle)) hits.push(`${what} in ${file}`);
  return hits;
}

/** The database and WAL files that are byte for byte as before (the -shm index may be rebuilt). */
function expectUnchanged(before: Map<string, Buffer>, after: Map<string, Buffer>): void {
  const files = [...before.keys()].filter((f) => !f.endsWith('-shm'));
  expect(files).toContain('tre.sqlite');
  expect(files.filter((f) => !after.get(f)?.equals(before.get(f)!))).toEqual([]);
}

/** A crash image: the files as they are now, while the store is open. */
function copyDir(from: string): string {
  const to = newDir();
  mkdirSync(to);
  for (const f of readdirSync(from)) copyFileSync(join(from, f), join(to, f));
  return to;
}

async function writeSecrets(store: Store): Promise<void> {
  await new HouseholdRegistry(store).upsert([
    { meterId: METER, supplierId: 's1', dnoId: 'd1', capacityW: 10_000, account: ACCOUNT },
  ]);
  const readings = ReadingStore.open(store);
  const dr = DrBook.open(store);
  const event: DrEvent = {
    v: 1,
    eventId: EVENT,
    dsmId: 'dsm1',
    windowStart: new Date(T0 + 7_200_000).toISOString(),
    windowEnd: new Date(T0 + 10_800_000).toISOString(),
    bidDeadline: new Date(T0 + 3_600_000).toISOString(),
    acceptBy: new Date(T0 + 5_400_000).toISOString(),
    requestedReductionWh: 50_000,
    priceCapPerMWh: 300_000,
  };
  await store.commit(() => {
    readings.insert({
      meterId: METER,
      intervalStart: T0,
      intervalMinutes: 15,
      energyWh: ENERGY_WH,
      registerWh: REGISTER_WH,
      exportWh: null,
      exportRegisterWh: null,
      gap: false,
      effectiveWh: ENERGY_WH,
      status: 'ok',
      contentHash: CONTENT_HASH,
      receivedAt: T0 + 60_000,
    });
    dr.addEvent(event);
    dr.addBid({
      bid_id: BID,
      event_id: EVENT,
      meter_id: METER,
      quantity_wh: 7_654_321,
      price: 123_456,
      pseudonym: PSEUDONYM,
    });
  });
}

function expectSecrets(store: Store): void {
  expect(new HouseholdRegistry(store).get(METER)?.account).toBe(ACCOUNT);
  expect(ReadingStore.open(store).energyIn(METER, T0, T0 + 900_000)).toEqual({ wh: ENERGY_WH, minutes: 15 });
  const bid = DrBook.open(store).bid(BID);
  expect(bid).toMatchObject({ meter_id: METER, pseudonym: PSEUDONYM, quantity_wh: 7_654_321 });
}

function expectKeyMismatch(open: () => Store, message: RegExp): void {
  let error: unknown;
  try {
    open().close();
  } catch (err) {
    error = err;
  }
  expect(error).toBeInstanceOf(StoreError);
  expect((error as StoreError).code).toBe('STORE_KEY_MISMATCH');
  expect((error as StoreError).message).toMatch(message);
}

describe('the store, encrypted at rest', () => {
  it('a plaintext store holds the needles (the check below is not vacuous)', async () => {
    const dir = newDir();
    const store = plainStoreIn(dir);
    await writeSecrets(store);
    const hits = found(filesOf(dir));
    store.close();
    for (const what of [METER, PSEUDONYM, 'SQLite header', 'energy (int32)', 'register (int48)'])
      expect(hits.some((h) => h.startsWith(what))).toBe(true);
    expect(found(filesOf(dir)).length).toBeGreaterThan(0);
  });

  it('no file of the data directory, while running or after, reveals a reading, bid, pseudonym or household', async () => {
    const dir = newDir();
    const store = Store.openIn(dir, { dataKey: testDataKey() });
    expect(store.db.pragma('journal_mode', { simple: true })).toBe('wal');
    expect(store.db.pragma('cipher', { simple: true })).toBe('chacha20');
    await writeSecrets(store);
    const running = filesOf(dir);
    expect([...running.keys()].sort()).toEqual(['tre.sqlite', 'tre.sqlite-shm', 'tre.sqlite-wal']);
    expect(running.get('tre.sqlite-wal')!.length).toBeGreaterThan(0); // the writes are in the WAL
    expect(found(running)).toEqual([]);
    const crashImage = copyDir(dir);
    store.close();
    expect(found(filesOf(dir))).toEqual([]);

    // The crash image (WAL not checkpointed) reads back with the right key only.
    const before = filesOf(crashImage);
    expectKeyMismatch(
      () => Store.openIn(crashImage, { dataKey: otherKey() }),
      /encrypted with another key \(a different TPM or TRE measurement, or a data directory copied/,
    );
    expectKeyMismatch(() => plainStoreIn(crashImage), /is encrypted .* no data key was given/);
    expectUnchanged(before, filesOf(crashImage));
    const recovered = Store.openIn(crashImage, { dataKey: testDataKey() });
    expectSecrets(recovered);
    expect(recovered.db.pragma('integrity_check', { simple: true })).toBe('ok');
    recovered.close();

    // The cleanly closed directory too.
    expectKeyMismatch(() => Store.openIn(dir, { dataKey: otherKey() }), /encrypted with another key/);
    const reopened = Store.openIn(dir, { dataKey: testDataKey() });
    expectSecrets(reopened);
    reopened.close();
    expect(found(filesOf(dir))).toEqual([]);
  });

  it('a plaintext tre.sqlite opened with a key fails clearly and is left as it was', async () => {
    const dir = newDir();
    const plain = plainStoreIn(dir);
    await writeSecrets(plain);
    const crashImage = copyDir(dir); // with a hot WAL
    plain.close();
    for (const d of [dir, crashImage]) {
      const before = filesOf(d);
      expectKeyMismatch(
        () => Store.openIn(d, { dataKey: testDataKey() }),
        /cannot be read with this data key/,
      );
      expectUnchanged(before, filesOf(d));
      const again = plainStoreIn(d);
      expectSecrets(again);
      expect(again.db.pragma('integrity_check', { simple: true })).toBe('ok');
      again.close();
    }
  });

  it('refuses a data key that is not 32 bytes', () => {
    expect(() => Store.openIn(newDir(), { dataKey: Buffer.alloc(16) })).toThrow(/32 bytes/);
  });
});
