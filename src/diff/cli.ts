/**
 * `cellwall diff OLD [NEW]` (loaded lazily by src/cli/diff.ts). OLD and NEW
 * are policy files or compiled bundles (`compile --out DIR`); with --live the
 * NEW side is this cell's netns (iptables-save / ipset save).
 */
import { stat } from 'node:fs/promises';
import type { CliContext } from '../cli/main.js';
import { CellwallError } from '../errors.js';
import type { Plan } from '../compile/plan.js';
import { planFromPayloads, type PayloadTexts } from './parse.js';
import { diffPlans, formatChange, type SemanticChange } from './semantic.js';
import { diffLines, formatHunks, payloadLines, type TextHunk } from './text.js';

export interface DiffCliOptions {
  live?: boolean;
  segment?: string;
  json?: boolean;
  text?: boolean;
  iptables?: string;
  stateDir?: string;
  backend?: string;
}

interface SideSegment { plan: Plan; texts: PayloadTexts }
interface Side {
  label: string;
  kind: 'policy' | 'bundle' | 'live';
  /** policies: every segment; bundle/live: one entry (named by the manifest, or null) */
  segments: Map<string | null, SideSegment>;
  /** live: canonical state texts are compared instead of payload text */
  canonical?: boolean;
  /** live nft table: the text part compares set elements only */
  nft?: boolean;
}

async function policySide(file: string): Promise<Side> {
  const { loadPolicy } = await import('../policy/index.js');
  const { compileSegment } = await import('../compile/index.js');
  const { renderPayloads } = await import('../compile/cli.js');
  const policy = await loadPolicy(file);
  const segments = new Map<string | null, SideSegment>();
  for (const name of policy.segments.keys()) {
    const { plan } = compileSegment(policy, name);
    const p = renderPayloads(plan);
    segments.set(name, { plan, texts: { ipset: p['ipset.restore'], v4: p['iptables.v4'], v6: p['iptables.v6'] } });
  }
  return { label: file, kind: 'policy', segments };
}

async function bundleSide(dir: string): Promise<Side> {
  const { readPayloadDir } = await import('../apply/payload.js');
  const p = await readPayloadDir(dir);
  const seg = typeof p.manifest?.segment === 'string' ? p.manifest.segment : null;
  const texts = { ipset: p.ipset, v4: p.v4, v6: p.v6 };
  return { label: dir, kind: 'bundle', segments: new Map([[seg, { plan: planFromPayloads(texts, seg ?? '(bundle)', dir), texts }]]) };
}

async function liveSide(o: DiffCliOptions): Promise<Side> {
  const { prepareTools } = await import('../apply/index.js');
  const { stateDirOf } = await import('../apply/statedir.js');
  const { runOk } = await import('../state/exec.js');
  const { tools } = await prepareTools(stateDirOf(o.stateDir), o.iptables);
  const [v4, v6, ipset] = await Promise.all([
    runOk(tools.save4, ['-t', 'filter']), runOk(tools.save6, ['-t', 'filter']), runOk(tools.ipset, ['save']),
  ]);
  const texts = { ipset, v4, v6 };
  return { label: 'live', kind: 'live', canonical: true, segments: new Map([[null, { plan: planFromPayloads(texts, '(live)', 'live cell'), texts }]]) };
}

async function liveNftSide(): Promise<Side> {
  const { run } = await import('../state/exec.js');
  const { NFT_FAMILY, NFT_TABLE } = await import('../render/nft.js');
  const { planFromNftJson } = await import('./nft.js');
  const r = await run('nft', ['-j', 'list', 'table', NFT_FAMILY, NFT_TABLE]);
  if (r.code !== 0 && /No such file or directory|does not exist/i.test(r.stderr)) {
    throw new CellwallError(`no table ${NFT_FAMILY} ${NFT_TABLE} in this netns: nothing was applied with --backend nft here (for the iptables backend, drop --backend nft)`);
  }
  if (r.code !== 0) throw new CellwallError(`nft -j list table ${NFT_FAMILY} ${NFT_TABLE} failed (exit ${r.code}): ${r.stderr.trim() || 'no output'}`);
  const plan = planFromNftJson(r.stdout, { what: 'live nft table' });
  return { label: 'live', kind: 'live', nft: true, segments: new Map([[null, { plan, texts: { ipset: '', v4: '', v6: '' } }]]) };
}

async function side(path: string): Promise<Side> {
  const st = await stat(path);
  return st.isDirectory() ? bundleSide(path) : policySide(path);
}

/** Pairs of (old, new) per segment to compare. */
function pairs(a: Side, b: Side, segment: string | undefined): Array<{ segment: string; old: SideSegment; new: SideSegment }> {
  const pick = (s: Side, name: string): SideSegment => {
    if (s.kind !== 'policy') return [...s.segments.values()][0];
    const x = s.segments.get(name);
    if (!x) throw new CellwallError(`${s.label}: no segment ${JSON.stringify(name)} (segments: ${[...s.segments.keys()].join(', ') || 'none'})`);
    return x;
  };
  let names: string[];
  if (segment) names = [segment];
  else if (a.kind === 'policy' && b.kind === 'policy') {
    names = [...a.segments.keys()].filter((n): n is string => n !== null && b.segments.has(n));
    if (!names.length) throw new CellwallError(`${a.label} and ${b.label} have no segment in common; choose one with --segment`);
  } else {
    const known = [a, b].filter((s) => s.kind !== 'policy').map((s) => [...s.segments.keys()][0]).find((n) => n);
    const pol = [a, b].find((s) => s.kind === 'policy');
    if (known) names = [known];
    else if (pol && pol.segments.size === 1) names = [[...pol.segments.keys()][0]!];
    else if (pol) throw new CellwallError(`--segment is required (segments in ${pol.label}: ${[...pol.segments.keys()].join(', ')})`);
    else names = ['(bundle)'];
  }
  return names.map((n) => ({ segment: n, old: pick(a, n), new: pick(b, n) }));
}

async function textDiff(a: SideSegment, b: SideSegment, canonical: boolean): Promise<Record<string, TextHunk[]>> {
  if (canonical) {
    // the live cell is save output: compare the canonical CW state texts of both sides
    const { desiredFromPayload } = await import('../apply/payload.js');
    const { familyText, setsText } = await import('../state/index.js');
    const { cwPartOf, parseSave } = await import('../state/iptables.js');
    const { cwSets, parseIpset } = await import('../state/ipset.js');
    const live = (t: PayloadTexts) => ({
      v4: cwPartOf(parseSave(t.v4).get('filter'), 4), v6: cwPartOf(parseSave(t.v6).get('filter'), 6), sets: cwSets(parseIpset(t.ipset).sets),
    });
    const sa = desiredFromPayload({ ...a.texts, manifest: null, source: 'old' });
    const sb = live(b.texts);
    const lines = (s: string) => s.split('\n').filter((l) => l !== '');
    return {
      'ipset.restore': diffLines(lines(setsText(sa.sets)), lines(setsText(sb.sets))),
      'iptables.v4': diffLines(lines(familyText(sa.v4)), lines(familyText(sb.v4))),
      'iptables.v6': diffLines(lines(familyText(sa.v6)), lines(familyText(sb.v6))),
    };
  }
  return {
    'ipset.restore': diffLines(payloadLines(a.texts.ipset), payloadLines(b.texts.ipset)),
    'iptables.v4': diffLines(payloadLines(a.texts.v4), payloadLines(b.texts.v4)),
    'iptables.v6': diffLines(payloadLines(a.texts.v6), payloadLines(b.texts.v6)),
  };
}

export interface SegmentDiff { segment: string; equal: boolean; changes: SemanticChange[]; text?: Record<string, TextHunk[]> }

export async function runDiff(oldPath: string, newPath: string | undefined, o: DiffCliOptions, ctx: CliContext): Promise<number> {
  if (o.live && newPath) throw new CellwallError('diff --live compares ONE policy or bundle with this cell: give only OLD');
  if (!o.live && !newPath) throw new CellwallError('diff: give OLD and NEW (policy files or `compile --out` folders), or OLD --live');
  const a = await side(oldPath);
  const backend = o.backend ?? 'iptables';
  if (backend !== 'iptables' && backend !== 'nft') throw new CellwallError(`--backend ${backend}: diff --live reads the iptables, nft or ebpf backend (expected iptables, nft or ebpf)`);
  if (backend === 'nft' && !o.live) throw new CellwallError('--backend nft: only with --live (policies and bundles are compared without a backend)');
  const b = o.live ? (backend === 'nft' ? await liveNftSide() : await liveSide(o)) : await side(newPath!);
  const out: SegmentDiff[] = [];
  for (const p of pairs(a, b, o.segment)) {
    const changes = diffPlans(p.old.plan, p.new.plan);
    const d: SegmentDiff = { segment: p.segment, equal: changes.length === 0, changes };
    if (o.text && b.nft) {
      const { nftSetLines } = await import('./nft.js');
      d.text = { 'set elements': diffLines(nftSetLines(p.old.plan), nftSetLines(p.new.plan)) };
    } else if (o.text) d.text = await textDiff(p.old, p.new, !!b.canonical);
    out.push(d);
  }
  const equal = out.every((d) => d.equal);
  if (o.json) {
    ctx.stdout.write(JSON.stringify({ equal, old: a.label, new: b.label, segments: out }, null, 2) + '\n');
  } else {
    for (const d of out) {
      ctx.stdout.write(`segment ${d.segment}: ${d.equal ? 'semantically equal' : `${d.changes.length} change${d.changes.length === 1 ? '' : 's'}`}\n`);
      for (const c of d.changes) ctx.stdout.write(`  ${formatChange(c)}\n`);
      if (d.text) for (const [name, hunks] of Object.entries(d.text)) ctx.stdout.write(formatHunks(name, a.label, b.label, hunks));
    }
  }
  return equal ? 0 : 2;
}
