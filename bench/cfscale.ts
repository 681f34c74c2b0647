/**
 * Issue 3: a Cloud-Foundry-scale policy, deterministic for a seed, in the
 * SPEC §1 format (JSON), plus the naive silk-style emission it replaces.
 *
 *   2,000 ASGs x 25 rules, destinations as CF comma lists (most short, a few up
 *   to 6,000 entries: IPs, CIDRs and ranges, ~5% IPv6), 1,000 space groups that
 *   ASGs are bound to, 4,000 app groups, 20,000 app-to-app rules between apps.
 *
 * Naive model (what garden/silk does per container, one iptables rule each):
 * for each of CONTAINERS running containers on the cell, each in one space and
 * one app, for every ASG rule bound to it (globally or through its space):
 * one rule per destination entry x port item (a comma port list is one rule
 * per port, a range one rule; `all` and ICMP one rule per destination), plus
 * 3 housekeeping rules per container (established, log, reject); and for
 * app-to-app, one rule per policy rule whose destination app has a container
 * on the cell, per such container, per port item.
 */
import { createWriteStream, existsSync, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { formatIPv4, geoipCidrs, mulberry32, repoRoot } from './data/geoip.js';
import { parsePrefix } from './lib/cidr.js';

export interface CfScaleShape {
  asgs: number;
  rulesPerAsg: number;
  maxDestinations: number;
  spaces: number;
  apps: number;
  appRules: number;
  /** ASGs bound globally (running and staging), the rest to 1-3 spaces */
  globalAsgs: number;
}

export const CF_SCALE: CfScaleShape = {
  asgs: 2000, rulesPerAsg: 25, maxDestinations: 6000, spaces: 1000, apps: 4000, appRules: 20000, globalAsgs: 10,
};

export const SEGMENT = 'shared';
export const CONTAINERS = 50;

interface CfRule {
  protocol: 'tcp' | 'udp' | 'icmp' | 'all';
  destination: string;
  ports?: string;
  type?: number;
  code?: number;
  log?: boolean;
  description?: string;
}

interface AppRuleJson { from: string; to: string; protocol?: 'tcp' | 'udp'; ports?: string }

export interface CfScalePolicy {
  version: 1;
  mode: 'tighten';
  defaults: { deny: 'reject'; log_denied: false; established: 'accept' };
  networks: Record<string, string[]>;
  security_groups: Record<string, CfRule[]>;
  groups: Record<string, { members: 'dynamic' }>;
  segments: Record<string, Record<string, unknown>>;
  bindings: Array<{ security_groups: string[]; groups?: string[]; phase: string | string[] }>;
  policies: { default: 'deny'; rules: AppRuleJson[] };
}

const pad = (n: number, w: number) => String(n).padStart(w, '0');
export const asgName = (i: number) => `asg-${pad(i, 4)}`;
export const spaceName = (i: number) => `space-${pad(i, 4)}`;
export const appName = (i: number) => `app-${pad(i, 4)}`;

const PORT_CHOICES = ['443', '80,443', '5432', '3306', '6379', '8080-8090', '53', '9000-9999', '25,465,587', '1-65535'];

/** Deterministic CF-scale policy. */
export function generateCfScale(seed = 42, shape: CfScaleShape = CF_SCALE): CfScalePolicy {
  const rnd = mulberry32(seed);
  const int = (n: number) => Math.floor(rnd() * n);
  const pick = <T>(xs: T[]): T => xs[int(xs.length)];
  const v4 = geoipCidrs(4); // the shared seed-42 pool (cached on disk); `seed` drives the choices
  const v6 = geoipCidrs(6);
  let c4 = 0;
  let c6 = 0;
  const destination = (): string => {
    const r = rnd();
    if (r < 0.05) return v6[c6++ % v6.length];
    if (r < 0.15) return `10.${int(256)}.${int(256)}.${int(256)}`; // private host
    const cidr = v4[c4++ % v4.length];
    if (r < 0.25) { // a range inside a public CIDR
      const { start, len } = parsePrefix(cidr, 4);
      const size = 2 ** (32 - len);
      if (size >= 4) {
        const a = Number(start) + int(size >> 1);
        return `${formatIPv4(a)}-${formatIPv4(a + 1 + int(size >> 1))}`;
      }
    }
    return cidr;
  };
  /** skewed list lengths: mostly short, 5% medium, 0.3% long (up to max) */
  const listLength = (max: number): number => {
    const r = rnd();
    if (r < 0.003) return max / 4 + int((3 * max) / 4) + 1;
    if (r < 0.053) return 20 + int(200);
    return 1 + int(12);
  };

  const security_groups: Record<string, CfRule[]> = {};
  for (let a = 0; a < shape.asgs; a++) {
    const rules: CfRule[] = [];
    const global = a < shape.globalAsgs;
    for (let k = 0; k < shape.rulesPerAsg; k++) {
      const p = rnd();
      const protocol: CfRule['protocol'] = p < 0.7 ? (rnd() < 0.85 ? 'tcp' : 'udp') : p < 0.8 ? 'icmp' : 'all';
      const n = global ? 1 + int(4) : listLength(shape.maxDestinations);
      const dests = new Set<string>();
      while (dests.size < n) {
        const d = destination();
        if (protocol !== 'icmp' || !d.includes(':')) dests.add(d); // icmp (v4) rules get v4 destinations only
      }
      const destinationText = [...dests].join(',');
      const rule: CfRule = { protocol, destination: destinationText };
      if (protocol === 'tcp' || protocol === 'udp') rule.ports = pick(PORT_CHOICES);
      if (protocol === 'icmp') { rule.type = pick([0, 3, 8, -1]); rule.code = -1; }
      if (rnd() < 0.02) rule.log = true;
      if (k === 0) rule.description = `generated ${asgName(a)}`;
      rules.push(rule);
    }
    security_groups[asgName(a)] = rules;
  }

  const groups: Record<string, { members: 'dynamic' }> = {};
  for (let s = 0; s < shape.spaces; s++) groups[spaceName(s)] = { members: 'dynamic' };
  for (let p = 0; p < shape.apps; p++) groups[appName(p)] = { members: 'dynamic' };

  const bindings: CfScalePolicy['bindings'] = [];
  const globals = Array.from({ length: shape.globalAsgs }, (_, i) => asgName(i));
  if (globals.length) bindings.push({ security_groups: globals, phase: ['running', 'staging'] });
  for (let a = shape.globalAsgs; a < shape.asgs; a++) {
    const spaces = new Set<string>();
    const k = 1 + int(3);
    while (spaces.size < k) spaces.add(spaceName(int(shape.spaces)));
    bindings.push({ security_groups: [asgName(a)], groups: [...spaces].sort(), phase: 'running' });
  }

  const rules: AppRuleJson[] = [];
  const seen = new Set<string>();
  while (rules.length < shape.appRules) {
    const from = appName(int(shape.apps));
    const to = appName(int(shape.apps));
    const r = rnd();
    const rule: AppRuleJson = r < 0.1 ? { from, to } : { from, to, protocol: r < 0.9 ? 'tcp' : 'udp', ports: pick(['8080', '8443', '9000-9100', '3000']) };
    const key = JSON.stringify(rule);
    if (seen.has(key)) continue;
    seen.add(key);
    rules.push(rule);
  }

  return {
    version: 1,
    mode: 'tighten',
    defaults: { deny: 'reject', log_denied: false, established: 'accept' },
    networks: { overlay: ['10.255.0.0/16', 'fd00:255::/64'] },
    security_groups,
    groups,
    segments: { [SEGMENT]: { container_network: 'overlay', egress: 'open' } },
    bindings,
    policies: { default: 'deny', rules },
  };
}

export interface Container { id: number; ip: string; ip6: string; space: string; app: string }

/**
 * The containers of the naive model, deterministic: `n` containers in random
 * spaces and apps, or (perSpace) one container in every space.
 */
export function naiveContainers(seed: number, shape: CfScaleShape = CF_SCALE, n = CONTAINERS, perSpace = false): Container[] {
  const rnd = mulberry32(seed ^ 0x5eed);
  const count = perSpace ? shape.spaces : n;
  return Array.from({ length: count }, (_, i) => ({
    id: i,
    ip: `10.255.${(i >> 8) & 255}.${(i & 255) + 2}`,
    ip6: `fd00:255::${(i + 2).toString(16)}`,
    space: perSpace ? spaceName(i) : spaceName(Math.floor(rnd() * shape.spaces)),
    app: appName(Math.floor(rnd() * shape.apps)),
  }));
}

const portItems = (ports?: string): string[] => (ports ? ports.split(',').map((p) => p.trim()) : ['']);

type Fam = 'v4' | 'v6';

/** The naive silk-style iptables-restore lines: [family, line, is a rule]. */
export function* naiveLines(policy: CfScalePolicy, containers: Container[]): Generator<[Fam, string, boolean]> {
  const bySpace = new Map<string, string[]>();
  const globals: string[] = [];
  for (const b of policy.bindings) {
    const phases = Array.isArray(b.phase) ? b.phase : [b.phase];
    if (!phases.includes('running')) continue;
    if (!b.groups) { globals.push(...b.security_groups); continue; }
    for (const g of b.groups) bySpace.set(g, [...(bySpace.get(g) ?? []), ...b.security_groups]);
  }
  const localByApp = new Map<string, Container[]>();
  for (const c of containers) localByApp.set(c.app, [...(localByApp.get(c.app) ?? []), c]);
  const chainOf = (c: Container) => `netout--c${pad(c.id, 4)}`;
  const both: Fam[] = ['v4', 'v6'];

  for (const f of both) {
    yield [f, '*filter', false];
    for (const c of containers) yield [f, `:${chainOf(c)} - [0:0]`, false];
  }
  for (const c of containers) {
    const chain = chainOf(c);
    for (const f of both) {
      yield [f, `-A FORWARD -s ${f === 'v4' ? c.ip : c.ip6} -j ${chain}`, true];
      yield [f, `-A ${chain} -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT`, true];
    }
    for (const asg of [...globals, ...(bySpace.get(c.space) ?? [])]) {
      for (const [k, r] of policy.security_groups[asg].entries()) {
        const comment = `-m comment --comment "${asg}:${k}"`;
        for (const d of r.destination.split(',')) {
          const f: Fam = d.includes(':') ? 'v6' : 'v4';
          const dst = d.includes('-') ? `-m iprange --dst-range ${d}` : `-d ${d}`;
          if (r.protocol === 'icmp') {
            yield [f, `-A ${chain} -p icmp ${dst} --icmp-type ${r.type === -1 ? 'any' : r.type} ${comment} -j ACCEPT`, true];
            continue;
          }
          for (const p of portItems(r.ports)) {
            const proto = r.protocol === 'all' ? '' : ` -p ${r.protocol} --dport ${p.replace('-', ':')}`;
            yield [f, `-A ${chain}${proto} ${dst} ${comment} -j ACCEPT`, true];
          }
        }
      }
    }
    for (const f of both) {
      yield [f, `-A ${chain} -m limit --limit 2/min -j LOG --log-prefix "DENY_${c.id} "`, true];
      yield [f, `-A ${chain} -j REJECT`, true];
    }
  }
  // app-to-app: ingress rules for local destination containers (source marked by app tag)
  for (const [i, r] of policy.policies.rules.entries()) {
    for (const c of localByApp.get(r.to) ?? []) {
      for (const p of portItems(r.ports)) {
        const proto = r.protocol ? ` -p ${r.protocol} --dport ${p.replace('-', ':')}` : '';
        yield ['v4', `-A FORWARD -m mark --mark 0x${(i + 1).toString(16)} -d ${c.ip}${proto} -m comment --comment "policy:${i}" -j ACCEPT`, true];
      }
    }
  }
  for (const f of both) yield [f, 'COMMIT', false];
}

export interface NaiveCounts { containers: number; rules: { v4: number; v6: number; total: number } }

/** Rule counts of the naive emission, without rendering it. */
export function countNaive(policy: CfScalePolicy, containers: Container[]): NaiveCounts {
  const rules = { v4: 0, v6: 0 };
  for (const [f, , isRule] of naiveLines(policy, containers)) if (isRule) rules[f]++;
  return { containers: containers.length, rules: { ...rules, total: rules.v4 + rules.v6 } };
}

export interface NaiveStats extends NaiveCounts {
  bytes: { v4: number; v6: number };
  files: { v4: string; v6: string };
}

/** Render the naive payloads (one per family) to `<prefix>.v4` / `.v6`, streaming; counts and sizes. */
export async function renderNaive(policy: CfScalePolicy, containers: Container[], prefix: string): Promise<NaiveStats> {
  const files = { v4: `${prefix}.v4`, v6: `${prefix}.v6` };
  const out = { v4: createWriteStream(files.v4), v6: createWriteStream(files.v6) };
  const rules = { v4: 0, v6: 0 };
  const bytes = { v4: 0, v6: 0 };
  const buf = { v4: [] as string[], v6: [] as string[] };
  const flush = async (f: Fam) => {
    const text = buf[f].join('');
    buf[f] = [];
    bytes[f] += Buffer.byteLength(text);
    if (!out[f].write(text)) await new Promise<void>((r) => out[f].once('drain', () => r()));
  };
  for (const [f, line, isRule] of naiveLines(policy, containers)) {
    buf[f].push(line + '\n');
    if (isRule) rules[f]++;
    if (buf[f].length >= 10_000) await flush(f);
  }
  for (const f of ['v4', 'v6'] as const) {
    await flush(f);
    await new Promise<void>((r) => out[f].end(() => r()));
  }
  return { containers: containers.length, rules: { ...rules, total: rules.v4 + rules.v6 }, bytes, files };
}

/** Write bench/.data/cfscale-<tag>-<seed>.json once and return its path. */
export function cfScaleFile(seed = 42, shape: CfScaleShape = CF_SCALE, tag = 'full'): string {
  const dir = join(repoRoot(), 'bench', '.data');
  const path = join(dir, `cfscale-${tag}-${seed}.json`);
  if (existsSync(path)) return path;
  mkdirSync(dir, { recursive: true });
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(generateCfScale(seed, shape)));
  renameSync(tmp, path);
  return path;
}

/** CF_SCALE divided by `factor` (at least one of each), for a run that fits a time budget. */
export function scaledShape(factor: number): CfScaleShape {
  const d = (n: number) => Math.max(1, Math.round(n / factor));
  return { ...CF_SCALE, asgs: d(CF_SCALE.asgs), spaces: d(CF_SCALE.spaces), apps: d(CF_SCALE.apps), appRules: d(CF_SCALE.appRules) };
}
