/**
 * Issue 2, lookups: build a cellwall `Lookup` over the aggregated geoip prefixes
 * and query N random addresses (fixed seed), vs cidr-matcher `contains` and vs
 * ip-cidr ranges + binary search, on the same prefixes and the same queries.
 * Answers are checked against a BigInt reference before any figure is reported.
 */
import { geoipCidrs, type GeoFamily } from '../data/geoip.js';
import { PrefixIndex, lookupQueries, parsePrefix } from '../lib/cidr.js';
import { timeFn } from '../lib/measure.js';
import { type Figure, type Row, row } from '../lib/report.js';
import type { SuiteOptions } from './aggregate.js';

export interface LookupOptions extends SuiteOptions {
  /** queries per family */
  queries: number;
  /** wall-time budget (ms) for a slow peer; it answers a prefix of the queries */
  peerBudgetMs: number;
}

/** Run `answer` over queries in chunks until all are done or the budget is spent. */
function timedPrefix<T>(queries: string[], budgetMs: number, answer: (q: string) => T): { answers: T[]; ms: number } {
  answer(queries[0]); // warm-up
  const answers: T[] = [];
  const t0 = performance.now();
  while (answers.length < queries.length && performance.now() - t0 < budgetMs) {
    const end = Math.min(queries.length, answers.length + 500);
    for (let i = answers.length; i < end; i++) answers.push(answer(queries[i]));
  }
  return { answers, ms: performance.now() - t0 };
}

export async function lookups(o: LookupOptions): Promise<Row[]> {
  const { mergeCidr } = await import('cidr-tools');
  const { default: Matcher } = await import('cidr-matcher');
  const { default: IPCIDR } = await import('ip-cidr');
  const rows: Row[] = [];
  for (const family of [4, 6] as GeoFamily[]) {
    const bits = family === 4 ? 32 : 128;
    // aggregated prefixes (explicit /len: cidr-matcher needs it)
    const prefixes = (mergeCidr(geoipCidrs(family)) as string[]).map((p) => (p.includes('/') ? p : `${p}/${bits}`));
    const queries = lookupQueries(prefixes, family, o.queries, 4200 + family);
    const ref = new PrefixIndex(prefixes, family);
    const refIds = queries.map((q) => ref.find(parsePrefix(q, family).start));
    const hits = refIds.filter((id) => id >= 0).length;
    o.log(`lookups v${family}: ${prefixes.length} prefixes, ${queries.length} queries (${hits} hits)`);
    const throughput = (n: number, ms: number) => (n / ms) * 1000;

    // cidr-matcher: linear scan, so it answers only a prefix of the queries within the budget
    const matcher = new Matcher(prefixes);
    const m = timedPrefix(queries, o.peerBudgetMs, (q) => matcher.contains(q));
    const mWrong = m.answers.findIndex((hit, i) => hit !== refIds[i] >= 0);
    const matcherFig: Figure = {
      name: 'cidr-matcher contains', value: throughput(m.answers.length, m.ms), unit: 'ops/s',
      detail: { queriesAnswered: m.answers.length, ms: m.ms },
    };

    // ip-cidr: parse prefixes to ranges, binary search per query (a fair hand-rolled JS baseline)
    const ranges = prefixes.map((p) => new IPCIDR(p).toRange({ type: 'bigInteger' }) as unknown as [bigint, bigint]);
    const order = ranges.map((_, i) => i).sort((a, b) => (ranges[a][0] < ranges[b][0] ? -1 : 1));
    const starts = order.map((i) => ranges[i][0]);
    const ends = order.map((i) => ranges[i][1]);
    const ipcidrFind = (q: string): number => {
      const v = BigInt(IPCIDR.createAddress(q).bigInteger().toString());
      let lo = 0;
      let hi = starts.length - 1;
      while (lo <= hi) {
        const mid = (lo + hi) >> 1;
        if (starts[mid] > v) hi = mid - 1;
        else if (ends[mid] < v) lo = mid + 1;
        else return order[mid];
      }
      return -1;
    };
    const ic = timedPrefix(queries, o.peerBudgetMs, ipcidrFind);
    const icWrong = ic.answers.findIndex((id, i) => id !== refIds[i]);
    const ipcidrFig: Figure = {
      name: 'ip-cidr + binary search', value: throughput(ic.answers.length, ic.ms), unit: 'ops/s',
      detail: { queriesAnswered: ic.answers.length, ms: ic.ms },
    };

    const task = `lookup v${family} (${prefixes.length} prefixes, ${queries.length} queries)`;
    let cellwall: Figure | null = null;
    let cwAgree: boolean | null = null;
    let note: string | undefined = o.core ? undefined : (o.coreError ?? 'no core');
    if (o.core) {
      const core = o.core;
      const t0 = performance.now();
      const lookup = new core.Lookup(prefixes.map((p, id) => ({ set: core.AddrSet.of([p]), id })));
      const buildMs = performance.now() - t0;
      const ids = lookup.find(queries);
      const wrong = refIds.findIndex((id, i) => ids[i] !== id);
      cwAgree = wrong < 0 && ids.length === queries.length;
      if (cwAgree) {
        const t = await timeFn(`cellwall Lookup.find v${family}`, () => lookup.find(queries), o.iterations, 1000);
        cellwall = {
          name: 'cellwall Lookup.find', value: throughput(queries.length, t.medianMs), unit: 'ops/s',
          detail: { ...t, buildMs, queries: queries.length },
        };
      } else {
        note = `cellwall answered ${ids[wrong]} for ${queries[wrong]}, reference ${refIds[wrong]}`;
      }
    }
    const peerNote = (wrongAt: number, name: string) =>
      (wrongAt >= 0 ? `${name} wrong for ${queries[wrongAt]}` : undefined);
    rows.push(row({
      suite: 'lookup', task, cellwall, peer: matcherFig, target: 10,
      agree: mWrong >= 0 ? false : cwAgree, note: peerNote(mWrong, 'cidr-matcher') ?? note,
    }));
    rows.push(row({
      suite: 'lookup', task, cellwall, peer: ipcidrFig, target: null,
      agree: icWrong >= 0 ? false : cwAgree, note: peerNote(icWrong, 'ip-cidr') ?? note,
    }));
  }
  return rows;
}
