/**
 * The store's change capture (issue 21): the real flows on a durable store journal every commit;
 * replayed into a fresh store with the same migrations, the changes give every table the same
 * content, row for row (readings, alerts, billing, DR, registry updates, deletes, a delete
 * cascade, a key change, odd values). A write rolled back in its savepoint is not journaled; a
 * failed append fails its commit (NOT_JOURNALED) and the next append carries it, also after a
 * restart; how a restarted writer rejoins the journal (`resumeWriting`).
 */
import { type PseudoBids, signContent, type Tariff, topics } from '@tre/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import { wireFlows } from '../src/flows.js';
import {
  applyChanges,
  type ChangeBatch,
  ChangeCapture,
  type ChangeSink,
  JournaledCommits,
  journalState,
  lastChange,
  migrateChangeJournal,
  resumeWriting,
  UNJOURNALED_TABLES,
} from '../src/store/change-journal.js';
import { type Db, Store, StoreError } from '../src/store/store.js';
import { flowContext, testDataKey } from './support/flow-context.js';

const T0 = Date.UTC(2026, 6, 1);
const MIN = 60_000;
const HOUR = 60 * MIN;
const DAY = 24 * HOUR;
const FLOW_OPTIONS = { billing: { minPeriod: { unit: 'day', count: 1 } as const } };

/** Tables of this test: a delete cascade, a rowid alias, a WITHOUT ROWID key, AUTOINCREMENT. */
const TEST_SCHEMA = `CREATE TABLE parents (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
  CREATE TABLE children (
    parent_id INTEGER NOT NULL REFERENCES parents(id) ON DELETE CASCADE,
    k TEXT NOT NULL, v BLOB, r REAL,
    PRIMARY KEY (parent_id, k)
  ) WITHOUT ROWID;
  CREATE TABLE notes (id INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT);
  CREATE TABLE plain (a TEXT, b ANY);`;
/** A migration run after capture started (the triggers must follow the new column). */
const LATE_MIGRATION = 'ALTER TABLE parents ADD COLUMN extra TEXT';

const cleanups: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** The store at `path` opened again (a restarted TRE), closed after the test. */
function reopen(path: string): Store {
  const store = new Store(path, { dataKey: testDataKey() });
  cleanups.push(() => store.close());
  return store;
}

/** A sink that keeps what it is given, numbered like a stream; `fail` makes the next appends fail. */
function memorySink() {
  const entries: ChangeBatch[] = [];
  let failures = 0;
  const sink: ChangeSink & { entries: ChangeBatch[]; fail(n: number): void } = {
    entries,
    fail(n) {
      failures = n;
    },
    async append(batch) {
      await new Promise((r) => setImmediate(r));
      if (failures > 0) {
        failures--;
        throw new Error('journal unreachable');
      }
      entries.push(structuredClone(batch));
      return { seq: entries.length, upTo: batch.upTo };
    },
  };
  return sink;
}

/** The flows on a durable store, journaled to a memory sink. */
function journaledShard() {
  const f = flowContext(T0 - HOUR, { durable: true });
  const flows = wireFlows(f.ctx, FLOW_OPTIONS);
  f.ctx.store.migrate('test-tables-1', TEST_SCHEMA);
  const sink = memorySink();
  const hook = JournaledCommits.attach(f.ctx.store, sink);
  flows.start();
  cleanups.push(() => f.close());
  cleanups.push(() => flows.stop());
  return { f, flows, sink, hook };
}

/** A fresh store with the same migrations (nothing started), the journal replayed into it. */
function replica(entries: readonly ChangeBatch[]) {
  const f = flowContext(T0 - HOUR, { durable: true });
  cleanups.push(() => f.close());
  wireFlows(f.ctx, FLOW_OPTIONS);
  f.ctx.store.migrate('test-tables-1', TEST_SCHEMA);
  f.ctx.store.migrate('test-late-1', LATE_MIGRATION);
  migrateChangeJournal(f.ctx.store);
  entries.forEach((e, i) => {
    applyChanges(f.ctx.store.db, e.sqls, { seq: i + 1, upTo: e.upTo });
  });
  return f.ctx.store;
}

/** Every journaled table, every row (with its rowid), in a fixed order; and the AUTOINCREMENT counters. */
function dump(db: Db): Record<string, unknown[]> {
  const tables = db
    .prepare(
      "SELECT name, wr FROM pragma_table_list WHERE schema = 'main' AND type = 'table' AND name NOT LIKE 'sqlite%' ORDER BY name",
    )
    .all() as { name: string; wr: number }[];
  const out: Record<string, unknown[]> = {};
  for (const { name, wr } of tables) {
    if (UNJOURNALED_TABLES.includes(name)) continue;
    const cols = (db.prepare('SELECT name FROM pragma_table_info(?)').all(name) as { name: string }[]).map(
      (c) => `"${c.name}"`,
    );
    const select = wr ? cols.join(', ') : ['rowid AS __rowid', ...cols].join(', ');
    const order = wr ? cols.map((_, i) => i + 1).join(', ') : '1';
    out[name] = db.prepare(`SELECT ${select} FROM "${name}" ORDER BY ${order}`).raw().all();
  }
  out.sqlite_sequence = db
    .prepare("SELECT name, seq FROM sqlite_sequence WHERE name != 'change_outbox' ORDER BY name")
    .raw()
    .all();
  return out;
}

const rowsOf = (dumped: Record<string, unknown[]>, table: string) => dumped[table]?.length ?? 0;

describe('change journal', () => {
  it('replays the real flows into a fresh store: every table identical, rolled-back writes not journaled', {
    timeout: 60_000,
  }, async () => {
    const { f, flows, sink } = journaledShard();
    const store = f.ctx.store;
    await f.ctx.registry.upsert(
      ['h1', 'h2', 'h3'].map((m) => ({
        meterId: m,
        supplierId: 's1',
        dnoId: 'd1',
        capacityW: 10_000,
        account: `acct-${m}`,
      })),
    );
    // Billing: a daily period and a tariff, then readings (one out of bounds, one resent, one conflicting).
    const supplier = f.party({ role: 'supplier', id: 's1' });
    expect(
      await supplier.send(topics.billingPeriod('s1'), {
        v: 1,
        requestId: 'bp',
        startsAt: new Date(T0).toISOString(),
        length: { unit: 'day', count: 1 },
      }),
    ).toMatchObject({ status: 'accepted' });
    const tariff: Tariff = {
      v: 1,
      supplierId: 's1',
      tariffId: 't1',
      currency: 'GBP',
      validFrom: new Date(T0).toISOString(),
      validTo: new Date(T0 + DAY).toISOString(),
      intervalMinutes: 30,
      pricesPerMWh: Array(48).fill(210_000),
    };
    expect(
      await supplier.send(topics.tariff('s1'), {
        v: 1,
        requestId: 'tariff',
        jws: await signContent('tariff', tariff, supplier.privateKey),
      }),
    ).toMatchObject({ status: 'accepted' });
    f.clock.advance(3 * HOUR);
    const reading = (meter: string, i: number, energyWh: number, registerWh: number) =>
      f.party({ role: 'meter', id: meter }).send(topics.reading(meter), {
        v: 1,
        requestId: `${meter}-${i}-${registerWh}`,
        intervalStart: new Date(T0 + i * 15 * MIN).toISOString(),
        intervalMinutes: 15,
        energyWh,
        registerWh,
      });
    const sent = await Promise.all([
      reading('h1', 0, 100, 1_100),
      reading('h1', 1, 120, 1_220),
      reading('h2', 0, 50, 500),
      reading('h3', 0, 70, 700),
      reading('h3', 1, 99_999, 100_699), // out of bounds: stored excluded, alerted
    ]);
    expect(sent.map((s) => s.status)).toEqual(['accepted', 'accepted', 'accepted', 'accepted', 'refused']);
    expect(await reading('h1', 1, 120, 1_220)).toMatchObject({ duplicate: true });
    expect(await reading('h1', 1, 121, 1_221)).toMatchObject({ reason: 'CONFLICTING_DUPLICATE' });
    for (let i = 2; i < 8; i++) expect(await reading('h2', i, 10, 500 + 10 * (i - 1))).toMatchObject({});

    // A registry update (an UPDATE of existing rows) and a supplier change.
    await f.ctx.registry.upsert([
      { meterId: 'h2', supplierId: 's1', dnoId: 'd2', capacityW: 12_000, account: 'acct-h2' },
    ]);

    // Demand response: an event, two bids, the release, an acceptance (DR tables and ledger credits).
    const dsm = f.party({ role: 'dsm', id: 'x' });
    const now = f.clock.now();
    const event = {
      v: 1,
      eventId: 'e1',
      dsmId: 'x',
      windowStart: new Date(now + 120 * MIN).toISOString(),
      windowEnd: new Date(now + 180 * MIN).toISOString(),
      bidDeadline: new Date(now + MIN).toISOString(),
      acceptBy: new Date(now + 30 * MIN).toISOString(),
      requestedReductionWh: 300,
      priceCapPerMWh: 1_000,
    };
    expect(
      await dsm.send(topics.drEvent('x'), {
        v: 1,
        requestId: 'ev',
        jws: await signContent('drEvent', event, dsm.privateKey),
      }),
    ).toMatchObject({ status: 'accepted' });
    for (const [m, q] of [
      ['h1', 100],
      ['h2', 60], // h2's baseline sheds at most 63 Wh
    ] as const)
      expect(
        await f.party({ role: 'meter', id: m }).send(topics.bid(m), {
          v: 1,
          requestId: `bid-${m}`,
          bidId: `bid-${m}-xxxxxx`,
          eventId: 'e1',
          quantityWh: q,
          pricePerMWh: 500,
        }),
      ).toMatchObject({ status: 'accepted' });
    f.clock.advance(MIN);
    const bidsTopic = topics.pseudoBids('x', 'e1');
    while (!f.published.some((p) => p.topic === bidsTopic)) await new Promise((r) => setImmediate(r));
    const bids = JSON.parse(f.published.find((p) => p.topic === bidsTopic)!.payload) as PseudoBids;
    const accepted = bids.bids.filter((b) => b.quantityWh === 100).map((b) => b.pseudonym);
    expect(
      await dsm.send(topics.accept('x', 'e1'), {
        v: 1,
        requestId: 'acc',
        jws: await signContent('drAcceptance', { v: 1, eventId: 'e1', dsmId: 'x', accepted }, dsm.privateKey),
      }),
    ).toMatchObject({ status: 'accepted' });

    // The period closes: statements and the ledger lines they take.
    f.clock.advance(T0 + DAY + HOUR - 1 - f.clock.now());
    expect(await flows.billing.closePeriod('s1', T0, T0 + DAY)).toBeGreaterThan(0);

    // Rows of this test's tables: a cascade, a key change, odd values; a migration after capture started.
    const run = (sql: string, ...args: unknown[]) => store.commit((db) => db.prepare(sql).run(...args));
    await run("INSERT INTO parents (id, name) VALUES (1, 'one'), (2, 'two'), (3, 'three')");
    await run(
      'INSERT INTO children (parent_id, k, v, r) VALUES (1, ?, ?, ?), (1, ?, NULL, ?), (2, ?, ?, ?)',
      'a\u0000hidden',
      Buffer.from([0, 1, 2, 255]),
      0.1 + 0.2,
      "it's",
      -1e-300,
      'x',
      Buffer.alloc(0),
      Number.MAX_VALUE,
    );
    await run("UPDATE children SET k = 'renamed' WHERE parent_id = 2 AND k = 'x'"); // a WITHOUT ROWID key change
    await run('UPDATE parents SET id = 30 WHERE id = 3'); // a rowid change (no children)
    await run('DELETE FROM parents WHERE id = 1'); // cascades to both of its children
    await run("INSERT INTO plain (a, b) VALUES ('p', 1), ('q', x'00'), ('r', 2.5), ('s', NULL)");
    await run("DELETE FROM plain WHERE a = 'q'");
    await run("UPDATE plain SET b = 'now text' WHERE a = 'r'");
    await run("INSERT INTO notes (body) VALUES ('n1'), ('n2'), ('n3')");
    await run('DELETE FROM notes WHERE id = 3'); // the AUTOINCREMENT counter stays at 3
    // Replaces id 2 by its UNIQUE name (no delete trigger fires for it; its child's cascade does).
    await run("INSERT OR REPLACE INTO parents (id, name) VALUES (4, 'two')");
    await run(
      'INSERT INTO children (parent_id, k, v, r) VALUES (30, ?, ?, ?), (30, ?, ?, ?)',
      'nul\u0000inside',
      Buffer.from([0, 255]),
      0.1 + 0.2,
      'é',
      Buffer.from('blob'),
      -0,
    );
    store.migrate('test-late-1', LATE_MIGRATION);
    await run("UPDATE parents SET extra = 'late column' WHERE id = 4");

    // One write of a batch fails in its savepoint, the other commits: only the second is journaled.
    const [doomed, kept] = await Promise.allSettled([
      store.commit((db) => {
        db.prepare("INSERT INTO parents (id, name) VALUES (90, 'doomed')").run();
        db.prepare("INSERT INTO notes (body) VALUES ('doomed note')").run();
        throw new Error('refused after writing');
      }),
      store.commit((db) => db.prepare("INSERT INTO parents (id, name) VALUES (91, 'kept')").run()),
    ]);
    expect(doomed).toMatchObject({ status: 'rejected', reason: { message: 'refused after writing' } });
    expect(kept.status).toBe('fulfilled');

    // Retention-like deletes of readings and alerts through the reading store.
    await store.commit(() => {
      flows.readings.deleteBefore(T0 + 2 * 15 * MIN, ['h2'], 100);
      flows.readings.deleteAlertsBefore(Number.MAX_SAFE_INTEGER, ['h3']);
    });
    await store.settled();

    const journaled = sink.entries.flatMap((e) => e.sqls).join('\n');
    expect(journaled).not.toContain('doomed');
    expect(journaled).toContain('kept');
    expect(journaled).toMatch(/DELETE FROM "children" WHERE "parent_id" = 1 AND "k" = 'it''s'/);
    expect(journaled).toContain('CAST(X');
    const original = dump(store.db);
    // The flows wrote what the test says they did (so the comparison covers them).
    for (const table of ['readings', 'ledger', 'households', 'statements', 'tariffs', 'dr_events', 'dr_bids'])
      expect(rowsOf(original, table), table).toBeGreaterThan(0);
    expect(journaled).toContain('INSERT OR REPLACE INTO "alerts"');
    expect(journaled).toContain('DELETE FROM "alerts" WHERE "rowid" = ');
    expect(journaled).toMatch(/DELETE FROM "readings" WHERE "meter_id" = 'h2' AND "interval_start" = /);
    expect(original.children).toEqual([
      [30, 'nul\u0000inside', Buffer.from([0, 255]), 0.1 + 0.2],
      [30, 'é', Buffer.from('blob'), 0],
    ]);
    expect(original.parents).toEqual([
      [4, 4, 'two', 'late column'],
      [30, 30, 'three', null],
      [91, 91, 'kept', null],
    ]);
    expect(original.sqlite_sequence).toEqual([['notes', 3]]);

    const copy = replica(sink.entries);
    expect(dump(copy.db)).toEqual(original);
    expect(journalState(copy).position).toEqual({
      seq: sink.entries.length,
      upTo: sink.entries.at(-1)!.upTo,
    });
  });

  it('a failed append fails its commit (NOT_JOURNALED) and the next append carries it; so does a restart', async () => {
    const f = flowContext(T0, { durable: true });
    cleanups.push(() => f.close());
    const store = f.ctx.store;
    store.migrate('test-tables-1', TEST_SCHEMA);
    const sink = memorySink();
    JournaledCommits.attach(store, sink);
    const note = (body: string) =>
      store.commit((db) => db.prepare('INSERT INTO notes (body) VALUES (?)').run(body));

    await note('first');
    sink.fail(1);
    const failed = await note('second').catch((err: unknown) => err);
    expect(failed).toBeInstanceOf(StoreError);
    expect(failed).toMatchObject({ code: 'NOT_JOURNALED', message: /committed here but not journaled/ });
    // Committed here all the same; a resend (or any later commit) journals it.
    expect(store.db.prepare('SELECT count(*) AS n FROM notes').get()).toEqual({ n: 2 });
    await note('third');
    expect(sink.entries.map((e) => e.sqls.length)).toEqual([1, 2]);
    expect(sink.entries[1]!.sqls.join()).toMatch(/'second'.*'third'/);

    // Not journaled when the TRE stops (the journal unreachable): still in the outbox after a restart.
    sink.fail(1);
    await expect(note('fourth')).rejects.toMatchObject({ code: 'NOT_JOURNALED' });
    await store.settled();
    store.close();
    const restarted = reopen(store.path);
    let state = journalState(restarted);
    expect(state.position).toEqual({ seq: 2, upTo: 3 }); // recorded by the commit of 'fourth'
    expect(resumeWriting({ ...state, lastChange: lastChange(restarted) }, [])).toEqual({
      kind: 'write',
      position: { seq: 2, upTo: 3 },
    });
    let hook = JournaledCommits.attach(restarted, sink, { after: state.position });
    await hook.flush();
    expect(sink.entries.map((e) => e.sqls.length)).toEqual([1, 2, 1]);
    expect(sink.entries[2]!.sqls[0]).toContain("'fourth'");
    expect(hook.position).toEqual({ seq: 3, upTo: 4 });

    // Entry 3 is not in the recorded position (no commit since): after a restart the store finds it is its own.
    restarted.close();
    const again = reopen(store.path);
    state = journalState(again);
    expect(state.position).toEqual({ seq: 2, upTo: 3 });
    const e3 = { seq: 3, writer: sink.entries[2]!.writer, upTo: sink.entries[2]!.upTo };
    const decision = resumeWriting({ ...state, lastChange: lastChange(again) }, [e3]);
    expect(decision).toEqual({ kind: 'write', position: { seq: 3, upTo: 4 } });
    hook = JournaledCommits.attach(
      again,
      sink,
      decision.kind === 'write' ? { after: decision.position } : {},
    );
    await again.commit((db) => db.prepare("INSERT INTO notes (body) VALUES ('fifth')").run());
    expect(sink.entries.map((e) => e.sqls.length)).toEqual([1, 2, 1, 1]);
    expect(sink.entries[3]!).toMatchObject({ upTo: 5, sqls: [expect.stringContaining("'fifth'")] });
  });

  it('resumeWriting: own entries are skipped, another writer is replayed, unjournaled changes behind it diverge', () => {
    const local = { writer: 'me', position: { seq: 4, upTo: 40 }, lastChange: 40 };
    expect(resumeWriting(local, [])).toEqual({ kind: 'write', position: { seq: 4, upTo: 40 } });
    expect(resumeWriting(local, [{ seq: 5, writer: 'other', upTo: 41 }])).toEqual({
      kind: 'replay',
      fromSeq: 5,
    });
    expect(
      resumeWriting({ ...local, lastChange: 45 }, [
        { seq: 5, writer: 'me', upTo: 43 },
        { seq: 6, writer: 'other', upTo: 44 },
      ]),
    ).toMatchObject({ kind: 'diverged', message: /changes 44\.\.45 that the journal lacks/ });
    expect(
      resumeWriting({ ...local, lastChange: 43 }, [
        { seq: 5, writer: 'me', upTo: 43 },
        { seq: 6, writer: 'other', upTo: 44 },
      ]),
    ).toEqual({ kind: 'replay', fromSeq: 6 });
  });

  it('a standby taking over continues the shard numbering; without a hook nothing is captured', async () => {
    const f = flowContext(T0, { durable: true });
    cleanups.push(() => f.close());
    const store = f.ctx.store;
    store.migrate('test-tables-1', TEST_SCHEMA);
    await store.commit((db) => db.prepare("INSERT INTO notes (body) VALUES ('before capture')").run());
    migrateChangeJournal(store);
    expect(store.db.prepare('SELECT count(*) AS n FROM change_outbox').get()).toEqual({ n: 0 });
    const capture = ChangeCapture.install(store, { after: { seq: 7, upTo: 70 } });
    await store.commit((db) => db.prepare("INSERT INTO notes (body) VALUES ('after')").run());
    capture.take();
    expect(capture.unjournaled()).toMatchObject({ upTo: 71, sqls: [expect.stringContaining("'after'")] });
    capture.dropTriggers();
    await store.commit((db) => db.prepare("INSERT INTO notes (body) VALUES ('dropped')").run());
    capture.take();
    expect(capture.unjournaled()?.upTo).toBe(71);
    capture.journaled({ seq: 8, upTo: 71 });
    expect(capture.unjournaled()).toBeUndefined();
  });

  it('a commit still queued when the store closes is journaled before its caller is answered', async () => {
    const store = new Store(':memory:');
    store.migrate('test-tables-1', TEST_SCHEMA);
    const sink = memorySink();
    JournaledCommits.attach(store, sink);
    const last = store.commit((db) => db.prepare("INSERT INTO notes (body) VALUES ('at close')").run());
    store.close(); // flushes the queue, then closes; the append runs after
    await expect(last).resolves.toMatchObject({ changes: 1 });
    expect(sink.entries.map((e) => e.sqls)).toEqual([[expect.stringContaining("'at close'")]]);
  });
});
