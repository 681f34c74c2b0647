/**
 * Issue 3: CF-scale policy. Compile time (`cellwall compile ... --out`), payload
 * sizes, rule and set-entry counts against the naive silk-style emission, and
 * kernel load time of both payloads inside cwt-* namespaces.
 */
import { mkdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import {
  CF_SCALE, CONTAINERS, SEGMENT, type CfScalePolicy, type CfScaleShape, cfScaleFile, countNaive, naiveContainers,
  renderNaive, scaledShape,
} from '../cfscale.js';
import { repoRoot } from '../data/geoip.js';
import { runOnce } from '../lib/measure.js';
import { firstPacketCost, kernelMissing, type LoadStep, loadedCounts, timedLoad, withNamespace } from '../lib/netns.js';
import { type Figure, type Row, row } from '../lib/report.js';

export interface CfScaleOptions {
  seed: number;
  /** 'full' = CF_SCALE; 'tenth' = CF_SCALE / 10 (loads within the budget) */
  scales: Array<'full' | 'tenth'>;
  /** per-payload kernel load budget, ms */
  loadBudgetMs: number;
  log: (msg: string) => void;
}

interface ManifestCounts { chains: number; rules: number; sets: number; entries: number }

const lines = (path: string, re: RegExp) => readFileSync(path, 'utf8').split('\n').filter((l) => re.test(l)).length;
const count = (name: string, value: number, detail?: Record<string, unknown>): Figure => ({ name, value, unit: 'count', detail });
const bytes = (name: string, value: number, detail?: Record<string, unknown>): Figure => ({ name, value, unit: 'bytes', detail });
const ms = (name: string, value: number, detail?: Record<string, unknown>): Figure => ({ name, value, unit: 'ms', detail });

/**
 * First-packet cost: a container of the segment's container network (in no
 * group: every bucket's source is checked) connects to an address no ASG of
 * the generated policy allows, so the packet walks the whole running chain
 * and is refused by the default deny (tcp-reset).
 */
const FIRST_PACKET = { src: '10.255.0.10', dst: '203.0.113.10', connects: 400 };

async function loadBoth(out: string, naive: { v4: string; v6: string }, budgetMs: number, log: (m: string) => void) {
  const cw = await withNamespace('cwload', async (ns) => {
    const steps: LoadStep[] = [timedLoad(ns, ['ipset', 'restore', '-f', join(out, 'ipset.restore')], budgetMs)];
    if (steps[0].ok) {
      steps.push(timedLoad(ns, ['iptables-restore', '--noflush', join(out, 'iptables.v4')], budgetMs));
      steps.push(timedLoad(ns, ['ip6tables-restore', '--noflush', join(out, 'iptables.v6')], budgetMs));
    }
    const loaded = loadedCounts(ns);
    // the loaded namespace becomes a cell: a container's new connections go through the rules
    const firstPacket = steps.length === 3 && steps.every((s) => s.ok) ? await firstPacketCost(ns, FIRST_PACKET.src, FIRST_PACKET.dst, FIRST_PACKET.connects) : null;
    return { steps, loaded, firstPacket };
  });
  log(`  cellwall load: ${cw.steps.map((s) => `${s.command.split(' ')[0]} ${s.ok ? `${(s.ms / 1000).toFixed(1)} s` : s.error}`).join('; ')}`);
  if (cw.firstPacket) log(`  first packet of a new connection: median ${cw.firstPacket.medianUs} us, p90 ${cw.firstPacket.p90Us} us (${JSON.stringify(cw.firstPacket)})`);
  const nv = await withNamespace('nvload', (ns) => {
    const steps = [
      timedLoad(ns, ['iptables-restore', naive.v4], budgetMs),
      timedLoad(ns, ['ip6tables-restore', naive.v6], budgetMs),
    ];
    return { steps, loaded: loadedCounts(ns) };
  });
  // the same connects through a cell with no rules at all
  const bare = cw.firstPacket ? await withNamespace('bare', (ns) => firstPacketCost(ns, FIRST_PACKET.src, FIRST_PACKET.dst, FIRST_PACKET.connects)) : null;
  if (bare) log(`  first packet through a cell without rules: median ${bare.medianUs} us, p90 ${bare.p90Us} us`);
  log(`  naive load: ${nv.steps.map((s) => `${s.command.split(' ')[0]} ${s.ok ? `${(s.ms / 1000).toFixed(1)} s` : s.error}`).join('; ')}`);
  return { cw, nv, bare };
}

async function oneScale(tag: 'full' | 'tenth', shape: CfScaleShape, o: CfScaleOptions): Promise<{ rows: Row[]; detail: unknown }> {
  const root = repoRoot();
  const file = cfScaleFile(o.seed, shape, tag);
  const policy = JSON.parse(readFileSync(file, 'utf8')) as CfScalePolicy;
  const label = `cfscale ${tag}`;
  o.log(`${label}: ${shape.asgs} ASGs x ${shape.rulesPerAsg} rules, ${shape.spaces + shape.apps} groups, ${shape.appRules} app rules (${file})`);

  // cellwall compile, whole process, once (it is the slow, deterministic part)
  const out = join(root, 'bench', '.data', `cfscale-${tag}-${o.seed}-out`);
  rmSync(out, { recursive: true, force: true });
  mkdirSync(out, { recursive: true });
  // the executable itself, as npx and the BOSH job run it (its #! line sets node's young generation size)
  const compile = runOnce({
    name: 'cellwall compile',
    argv: [join(root, 'bin', 'cellwall.js'), 'compile', file, '--segment', SEGMENT, '--out', out],
  }, 30 * 60_000);
  o.log(`  compile ${(compile.ms / 1000).toFixed(1)} s`);
  const manifest = JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8')) as {
    v4: { counts: ManifestCounts }; v6: { counts: ManifestCounts }; stats?: unknown;
  };
  const files = ['ipset.restore', 'iptables.v4', 'iptables.v6'];
  const sizes = Object.fromEntries(files.map((f) => [f, statSync(join(out, f)).size]));
  const cwBytes = files.reduce((a, f) => a + sizes[f], 0);
  // cross-check the manifest against the payload text
  const cwRules = lines(join(out, 'iptables.v4'), /^-[AI] /) + lines(join(out, 'iptables.v6'), /^-[AI] /);
  const cwEntries = lines(join(out, 'ipset.restore'), /^add /);
  const cwSets = lines(join(out, 'ipset.restore'), /^create /);
  const mRules = manifest.v4.counts.rules + manifest.v6.counts.rules;
  const mEntries = manifest.v4.counts.entries + manifest.v6.counts.entries;
  const consistent = Math.abs(cwRules - mRules) <= 2 && cwEntries === mEntries;
  o.log(`  cellwall: ${cwRules} rules, ${cwSets} sets, ${cwEntries} set entries, ${(cwBytes / 2 ** 20).toFixed(1)} MiB${consistent ? '' : ` (manifest says ${mRules} rules, ${mEntries} entries)`}`);

  // naive: rendered for CONTAINERS containers, counted for one container per space
  const containers = naiveContainers(o.seed, shape, CONTAINERS);
  const t0 = performance.now();
  const naive = await renderNaive(policy, containers, join(root, 'bench', '.data', `cfscale-${tag}-${o.seed}-naive`));
  const perSpace = countNaive(policy, naiveContainers(o.seed, shape, 0, true));
  o.log(`  naive (${CONTAINERS} containers): ${naive.rules.total} rules, ${((naive.bytes.v4 + naive.bytes.v6) / 2 ** 20).toFixed(1)} MiB (${((performance.now() - t0) / 1000).toFixed(1)} s); one container per space: ${perSpace.rules.total} rules`);

  const naiveName = `naive silk, ${CONTAINERS} containers`;
  const rows: Row[] = [
    row({ suite: 'cfscale', task: `${label}: compile (whole process)`, cellwall: ms('cellwall compile', compile.ms), peer: null, target: null, agree: null }),
    row({
      suite: 'cfscale', task: `${label}: iptables rules (v4+v6)`,
      cellwall: count('cellwall rules', cwRules, { v4: manifest.v4.counts, v6: manifest.v6.counts, sets: cwSets }),
      peer: count(naiveName, naive.rules.total, naive.rules), target: null, agree: consistent ? null : false,
      note: consistent ? 'cellwall covers every space and app; naive only its containers' : 'manifest counts differ from payload',
    }),
    row({
      suite: 'cfscale', task: `${label}: iptables rules (v4+v6)`, cellwall: count('cellwall rules', cwRules),
      peer: count(`naive silk, 1 container x ${shape.spaces} spaces`, perSpace.rules.total, perSpace.rules),
      target: null, agree: null, note: 'same coverage of spaces',
    }),
    row({
      suite: 'cfscale', task: `${label}: set entries (ipset)`, cellwall: count('cellwall set entries', cwEntries, { sets: cwSets }),
      peer: null, target: null, agree: null, note: 'naive uses no sets',
    }),
    row({
      suite: 'cfscale', task: `${label}: payload bytes`, cellwall: bytes('cellwall payloads', cwBytes, sizes),
      peer: bytes(naiveName, naive.bytes.v4 + naive.bytes.v6, naive.bytes), target: null, agree: null,
    }),
  ];

  const missing = kernelMissing();
  let load: unknown = { skipped: missing };
  if (missing) {
    o.log(`  kernel load skipped: ${missing}`);
  } else {
    const { cw, nv, bare } = await loadBoth(out, naive.files, o.loadBudgetMs, o.log);
    load = { cellwall: cw, naive: nv, bare, budgetMs: o.loadBudgetMs };
    if (cw.firstPacket && bare) {
      const fp = cw.firstPacket;
      rows.push(row({
        suite: 'cfscale', task: `${label}: first packet of a new connection (median, worst case)`,
        cellwall: ms('connect through the loaded cell', fp.medianUs / 1000, { ...fp, ...FIRST_PACKET }),
        peer: ms('connect through a cell without rules', bare.medianUs / 1000, { ...bare }), target: null,
        // the path measured is the refused one: every connect must have ended in the default deny's reset
        agree: fp.refused === fp.connects ? null : false,
        note: fp.refused === fp.connects ? 'source in no group, destination no ASG allows: the whole running chain, then tcp-reset'
          : `expected every connect refused by the default deny, got ${fp.ok} accepted, ${fp.other} other`,
      }));
    }
    const total = (steps: LoadStep[]) => steps.reduce((a, s) => a + s.ms, 0);
    const done = (steps: LoadStep[]) => steps.every((s) => s.ok);
    const cwDone = done(cw.steps) && cw.steps.length === 3;
    rows.push(row({
      suite: 'cfscale', task: `${label}: kernel load (netns)`,
      cellwall: cwDone ? ms('ipset + iptables-restore', total(cw.steps), { steps: cw.steps, loaded: cw.loaded }) : null,
      peer: done(nv.steps) ? ms(`${naiveName}, iptables-restore`, total(nv.steps), { steps: nv.steps, loaded: nv.loaded }) : null,
      target: null, agree: null,
      note: cwDone ? undefined
        : `cellwall did not load: ${cw.steps.find((s) => !s.ok)?.error} (${cw.loaded.sets}/${cwSets} sets loaded)`,
    }));
  }
  return { rows, detail: { tag, shape, policyBytes: statSync(file).size, compileMs: compile.ms, manifestStats: manifest.stats, naive, perSpace, load } };
}

export async function cfscale(o: CfScaleOptions): Promise<{ rows: Row[]; detail: unknown[] }> {
  const rows: Row[] = [];
  const detail: unknown[] = [];
  for (const tag of o.scales) {
    const r = await oneScale(tag, tag === 'full' ? CF_SCALE : scaledShape(10), o);
    rows.push(...r.rows);
    detail.push(r.detail);
  }
  return { rows, detail };
}
