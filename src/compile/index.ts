/**
 * The compiler: validated Policy + segment -> backend-neutral Plan (see plan.ts
 * for the chain layout and SPEC §2 for the meaning it implements).
 *
 * Optimisations:
 *  - destinations are unions computed by the core (exclusions were already
 *    subtracted by the loader), minus the app-to-app space (decided in step 2)
 *    and, for running sources of a restricted segment, intersected with
 *    egress_allow; what is left empty is reported as shadowed;
 *  - ASG rules are bucketed by (who is bound, log flag, protocol/port class)
 *    and every bucket becomes ONE rule over ONE set: a hash:net,port set for
 *    short lists of single ports (one entry per CIDR x port), a hash:net
 *    set plus multiport for port ranges (a range never expands into
 *    entries), a hash:net set for `all` and ICMP;
 *    the rule count depends on the policy's shape, never on how many
 *    destinations or containers there are;
 *  - sets and chains are content-addressed: identical content -> one object,
 *    and an unchanged policy gives byte-identical payloads.
 */
import { createHash } from 'node:crypto';
import { AddrSet, type Family } from '../core/index.js';
import { DiagnosticsError, type Diagnostic, type SourceLoc } from '../errors.js';
import type { AppRule, AsgRule, Phase, Policy, PortRange, Segment } from '../policy/model.js';
import { dynamicSetName } from '../policy/names.js';
import {
  DYNAMIC_SET,
  type FamilyPlan,
  type Plan,
  type PlanChain,
  type PlanMatch,
  type PlanRule,
  type PlanSet,
  type PlanSetKind,
  type PlanStats,
  type PlanTarget,
} from './plan.js';
import { CELLWALL_VERSION, locText, mayContain, multiportChunks, nextPow2, portCount, portsText, sha256, unionAll } from './util.js';
import { redundantAsgRules } from './redundancy.js';

export type { Plan } from './plan.js';

export interface CompileOptions {
  /** largest set the compiler will emit (entries); default 1,048,576 */
  maxSetEntries?: number;
  /** tcp/udp rules with at most this many ports use hash:net,port sets; default 16 */
  smallPorts?: number;
  /** false: leave out the (policy-level) redundant-rule warnings, which the caller computes elsewhere */
  redundantRules?: boolean;
}

export interface CompileResult {
  plan: Plan;
  warnings: Diagnostic[];
}

export const DEFAULT_MAX_SET_ENTRIES = 1 << 20;
const DEFAULT_SMALL_PORTS = 16;
const PHASES: Phase[] = ['running', 'staging'];

/** Compile one segment. Throws DiagnosticsError for compile-level errors (e.g. a set too large). */
export function compileSegment(policy: Policy, segmentName: string, opts: CompileOptions = {}): CompileResult {
  const segment = policy.segments.get(segmentName);
  if (!segment) throw new Error(`compile: unknown segment ${segmentName}`);
  const ctx = new Ctx(policy, segment, opts);
  const families = { 4: ctx.compileFamily(4), 6: ctx.compileFamily(6) };
  if (ctx.errors.length) throw new DiagnosticsError(ctx.errors);
  ctx.reportShadowed();
  const plan: Plan = {
    segment: segment.name,
    mode: policy.mode,
    policyFile: policy.file,
    policyHash: policy.hash,
    cellwallVersion: CELLWALL_VERSION,
    jumpComment: `cellwall segment ${segment.name} policy ${policy.hash.slice(0, 12)}`,
    families,
    stats: ctx.stats,
  };
  return { plan, warnings: [...(opts.redundantRules === false ? [] : redundantAsgRules(policy)), ...ctx.warnings] };
}

/** Compile every segment; every error and warning, each reported once. Used by `cellwall validate`. */
export function checkPolicy(policy: Policy, opts: CompileOptions = {}): Diagnostic[] {
  const out: Diagnostic[] = [];
  const seen = new Set<string>();
  const add = (d: Diagnostic) => {
    const key = `${d.severity}|${d.loc.file}|${d.loc.line}|${d.loc.col}|${d.message}`;
    if (!seen.has(key)) {
      seen.add(key);
      out.push(d);
    }
  };
  for (const name of policy.segments.keys()) {
    try {
      compileSegment(policy, name, opts).warnings.forEach(add);
    } catch (e) {
      if (e instanceof DiagnosticsError) e.diagnostics.forEach(add);
      else throw e;
    }
  }
  return out;
}

/**
 * A chain name: `CW-` + role tag (P phase, A app-to-app, D deny) + 10 hex of the content, at most 28 characters.
 * The content is what is rendered: matches, target, description, first location (as the comment shows it,
 * relative to the policy file, so the name does not depend on how the file was named on the command line)
 * and the number of locations.
 */
function chainName(tag: string, rules: PlanRule[], policyFile: string): string {
  // the lines joined by \n, hashed in chunks (CF-scale chains hold 10^4 rules: no 40 MB string)
  const h = createHash('sha256');
  let chunk = '';
  for (let i = 0; i < rules.length; i++) {
    const r = rules[i];
    const l = r.locs[0];
    chunk += `${i ? '\n' : ''}${matchKey(r.match)}|${targetKey(r.target)}|${r.step}|${r.what}|${l ? locText(l, policyFile) : ''}|${r.locs.length}`;
    if (chunk.length >= HASH_CHUNK) { h.update(chunk, 'utf8'); chunk = ''; }
  }
  return `CW-${tag}-${h.update(chunk, 'utf8').digest('hex').slice(0, 10)}`;
}

/** text hashed at a time by chainName */
const HASH_CHUNK = 1 << 16;

/** every field of a match, unambiguously (names and numbers only; no free text) */
function matchKey(m: PlanMatch): string {
  const set = (x: PlanMatch['src']) => (x ? `${x.negate ? '!' : ''}${x.set}` : '');
  const ports = m.dports ? m.dports.map((p) => `${p.from}-${p.to}`).join(',') : '';
  const icmp = m.icmp ? `${m.icmp.type}/${m.icmp.code}` : '';
  return `${set(m.src)};${set(m.dst)};${m.proto ?? ''};${ports};${icmp};${m.ctstate ?? ''}`;
}

function targetKey(t: PlanTarget): string {
  switch (t.kind) {
    case 'goto': return `goto ${t.chain}`;
    case 'log': return `log ${JSON.stringify(t.prefix)}`;
    case 'reject': return `reject ${t.with}`;
    default: return t.kind;
  }
}

/** The chain FORWARD jumps to: stable per segment so the jump need not change with the policy. */
export function topChainName(segment: string): string {
  const clean = segment.toUpperCase().replace(/[^A-Z0-9]/g, '-').slice(0, 14);
  return `CW-${clean}-${sha256(segment).slice(0, 8)}`;
}

interface AppClass {
  /** the first rule of the class (from, protocol, ports) */
  rule: AppRule;
  tos: string[];
  locs: SourceLoc[];
  what: string;
  matches: PlanMatch[];
}

interface Bucket {
  srcKey: string;
  /** undefined: any governed source of the phase */
  groups: string[] | undefined;
  log: boolean;
  all: AsgRule[];
  allSets: AddrSet[];
  /** (proto:port) -> contributions */
  ports: Map<string, { proto: 'tcp' | 'udp'; port: number; rules: AsgRule[]; sets: AddrSet[] }>;
  ranges: Map<string, { proto: 'tcp' | 'udp'; ports: PortRange[]; rules: AsgRule[]; sets: AddrSet[] }>;
  icmp: Map<string, { proto: 'icmp' | 'icmpv6'; type: number; code: number; rules: AsgRule[]; sets: AddrSet[] }>;
}

class Ctx {
  readonly errors: Diagnostic[] = [];
  readonly warnings: Diagnostic[] = [];
  readonly stats: PlanStats = { asgRulesBound: 0, asgRulesShadowed: 0, setsShared: 0, chainsMerged: 0, cidrsIn: 0, cidrsOut: 0 };
  private readonly maxEntries: number;
  private readonly smallPorts: number;
  /** per bound ASG rule: did it reach a set anywhere, and why not */
  private readonly reach = new Map<AsgRule, { used: boolean; reason?: string }>();
  private readonly bound = new Set<AsgRule>();
  private readonly dynamicGroups: string[];
  private readonly staticGroups: string[];

  constructor(readonly policy: Policy, readonly segment: Segment, opts: CompileOptions) {
    this.maxEntries = opts.maxSetEntries ?? DEFAULT_MAX_SET_ENTRIES;
    this.smallPorts = opts.smallPorts ?? DEFAULT_SMALL_PORTS;
    this.dynamicGroups = [...policy.groups.values()].filter((g) => g.kind === 'dynamic').map((g) => g.name).sort();
    this.staticGroups = [...policy.groups.values()].filter((g) => g.kind === 'static').map((g) => g.name).sort();
  }

  private appClassCache?: AppClass[];

  /**
   * App-to-app rules with the same source group, destination group and
   * protocol/ports form one class: ONE rule whose destination is the
   * destination group's set, or for a dynamic group the list of its two phase
   * sets, shared by every rule to that group. (One list per class with several
   * destination groups would make a list:set per class: at CF scale ~10k sets
   * per family, and the kernel's set lookups are linear in the number of sets.)
   * Family and phase independent, computed once.
   */
  appClasses(): AppClass[] {
    if (this.appClassCache) return this.appClassCache;
    const classes = new Map<string, { rule: AppRule; tos: Set<string>; locs: SourceLoc[] }>();
    for (const r of this.policy.policies.rules) {
      const key = `${r.from}\u0000${r.to}\u0000${r.protocol}\u0000${r.ports ? portsText(r.ports) : ''}\u0000${r.icmpType ?? ''}/${r.icmpCode ?? ''}`;
      let c = classes.get(key);
      if (!c) classes.set(key, (c = { rule: r, tos: new Set(), locs: [] }));
      c.tos.add(r.to);
      c.locs.push(r.loc);
    }
    this.appClassCache = [...classes.values()].map((c) => {
      const r = c.rule;
      const toList = [...c.tos];
      const tos = toList.length > 3 ? `${toList.slice(0, 3).join(',')},+${toList.length - 3}` : toList.join(',');
      return {
        rule: r, tos: toList, locs: dedupeLocs(c.locs),
        what: `policy ${r.from} -> ${tos} ${r.protocol}${r.ports ? ' ' + portsText(r.ports) : ''}`,
        matches: protoMatches(r.protocol, r.ports, r.icmpType, r.icmpCode),
      };
    });
    return this.appClassCache;
  }

  compileFamily(f: Family): FamilyPlan {
    return new FamilyCompiler(this, f).run();
  }

  error(loc: SourceLoc, message: string, expected?: string): void {
    this.errors.push({ severity: 'error', loc, message, ...(expected ? { expected } : {}) });
  }

  get maxSetEntries(): number { return this.maxEntries; }
  get small(): number { return this.smallPorts; }
  get dynamics(): string[] { return this.dynamicGroups; }
  get statics(): string[] { return this.staticGroups; }

  noteBound(r: AsgRule): void {
    if (!this.bound.has(r)) {
      this.bound.add(r);
      this.stats.asgRulesBound++;
    }
  }

  noteReach(r: AsgRule, used: boolean, reason?: string): void {
    const cur = this.reach.get(r) ?? { used: false };
    if (used) cur.used = true;
    else if (!cur.reason && reason) cur.reason = reason;
    this.reach.set(r, cur);
  }

  reportShadowed(): void {
    for (const r of this.bound) {
      const st = this.reach.get(r);
      if (!st || st.used || !st.reason) continue;
      this.stats.asgRulesShadowed++;
      this.warnings.push({
        severity: 'warning',
        loc: r.loc,
        message: `security group ${r.asg} rule ${r.index} (${r.protocol} ${r.destinationText}) never applies in segment ${this.segment.name}: ${st.reason}`,
      });
    }
  }
}

class FamilyCompiler {
  private readonly sets = new Map<string, PlanSet>();
  private readonly chains = new Map<string, PlanChain>();
  /** static group addresses and the container network of this family: destinations decided by step 2 */
  private readonly staticAppDst: AddrSet;
  private readonly staticGoverned: AddrSet;
  private denyChain = '';
  private readonly destCache = new Map<AsgRule, { d: AddrSet; inApp: boolean }>();
  /** tighten + established accept: the ESTABLISHED,RELATED RETURN is the first rule of the top chain */
  private readonly hoistEstablished: boolean;

  constructor(private readonly ctx: Ctx, private readonly f: Family) {
    const p = ctx.policy;
    const staticSets = ctx.statics.map((g) => p.groups.get(g)!.set!.family(f));
    const cn = ctx.segment.containerNetwork.family(f);
    this.staticGoverned = unionAll([...staticSets, cn]);
    this.staticAppDst = this.staticGoverned;
    this.hoistEstablished = ctx.policy.mode === 'tighten' && ctx.policy.defaults.established === 'accept';
  }

  run(): FamilyPlan {
    const { ctx, f } = this;
    const seg = ctx.segment;
    this.denyChain = this.addChain('D', 'deny', undefined, this.denyRules());
    const top: PlanRule[] = [];
    const phaseChains: Partial<Record<Phase, string>> = {};
    for (const phase of PHASES) phaseChains[phase] = this.addChain('P', 'phase', phase, this.phaseRules(phase));
    // classification: staging membership first (it is explicit), then every other governed source counts as running
    const stg = this.listOrSingle(ctx.dynamics.map((g) => this.dynSet(g, 'staging')), `staging members of ${seg.name}`);
    if (stg) top.push(rule({ src: { set: stg } }, { kind: 'goto', chain: phaseChains.staging! }, 0, 'staging sources', [seg.loc]));
    const runMembers: string[] = [];
    const gov = this.netSet(this.staticGoverned, `static groups and container network (${seg.name})`, [seg.loc]);
    if (gov) runMembers.push(gov);
    for (const g of ctx.dynamics) runMembers.push(this.dynSet(g, 'running'));
    const run = this.listOrSingle(runMembers, `running sources of ${seg.name}`);
    if (run) top.push(rule({ src: { set: run } }, { kind: 'goto', chain: phaseChains.running! }, 0, 'running sources', [seg.loc]));
    if (this.hoistEstablished) {
      // tighten: allowed and untouched are both RETURN, so established packets of any
      // source can return before the (set-heavy) source classification
      top.unshift(this.allow({ ctstate: 'ESTABLISHED,RELATED' }, 1, 'established (any source)', [seg.loc]));
    } else if (ctx.policy.defaults.established === 'accept' && gov && ctx.dynamics.length) {
      // enforce: established packets of static/container-network sources are accepted
      // whatever their phase, with one lookup before the member-set lists
      top.unshift(this.allow({ ctstate: 'ESTABLISHED,RELATED', src: { set: gov } }, 1, 'established (static sources)', [seg.loc]));
    }
    const topName = topChainName(seg.name);
    const chains: PlanChain[] = [{ name: topName, role: 'top', rules: top }];
    // callees after callers: phase, a2a, deny
    const order = { top: 0, phase: 1, a2a: 2, deny: 3 } as const;
    const live = reachable(top, this.chains);
    const rest = [...this.chains.values()].filter((c) => live.has(c.name));
    rest.sort((a, b) => order[a.role] - order[b.role] || (a.phase ?? '').localeCompare(b.phase ?? '') || a.name.localeCompare(b.name));
    chains.push(...rest);
    // member sets, then hash:net and hash:net,port, then lists; each group by name in
    // code-unit order (the default sort of strings: a comparator costs ~50 ms over
    // the ~10^6 comparisons of CF scale, localeCompare twice that)
    const groups: [string[], string[], string[]] = [[], [], []];
    const setOrder = { dynamic: 0, net: 1, 'net,port': 1, list: 2 } as const;
    for (const s of this.sets.values()) groups[setOrder[s.kind.type]].push(s.name);
    const sets = groups.flatMap((names) => names.sort().map((n) => this.sets.get(n)!));
    return { family: f, top: topName, chains, sets };
  }

  // ---- chains ----

  /** chain names by rule list: the shared A chain is named once */
  private readonly chainNames = new Map<PlanRule[], string>();
  private addChain(tag: string, role: PlanChain['role'], phase: Phase | undefined, rules: PlanRule[]): string {
    let name = this.chainNames.get(rules);
    if (!name) this.chainNames.set(rules, (name = chainName(tag, rules, this.ctx.policy.file)));
    const same = this.chains.get(name);
    if (same) {
      // identical content (e.g. both phases): one chain serves both
      this.ctx.stats.chainsMerged++;
      if (same.phase !== phase) delete same.phase;
    } else this.chains.set(name, { name, role, ...(phase ? { phase } : {}), rules });
    return name;
  }

  private allow(match: PlanMatch, step: PlanRule['step'], what: string, locs: SourceLoc[]): PlanRule {
    return rule(match, { kind: 'allow' }, step, what, locs);
  }

  private denyRules(): PlanRule[] {
    const { policy, segment } = this.ctx;
    const d = policy.defaults;
    const loc = segment.loc;
    const out: PlanRule[] = [];
    if (d.logDenied) out.push(rule({}, { kind: 'log', prefix: logPrefix('CW-DENY', segment.name) }, 5, 'log denied', [loc]));
    if (d.deny === 'drop') out.push(rule({}, { kind: 'drop' }, 5, 'deny (drop)', [loc]));
    else {
      out.push(rule({ proto: 'tcp' }, { kind: 'reject', with: 'tcp-reset' }, 5, 'deny tcp (reject)', [loc]));
      out.push(rule({}, { kind: 'reject', with: 'port-unreachable' }, 5, 'deny (reject)', [loc]));
    }
    return out;
  }

  private appDst?: string | null;
  private phaseRules(phase: Phase): PlanRule[] {
    const { ctx } = this;
    const { policy, segment } = ctx;
    const out: PlanRule[] = [];
    const deny: PlanTarget = { kind: 'goto', chain: this.denyChain };
    if (policy.defaults.established === 'accept' && !this.hoistEstablished) {
      out.push(this.allow({ ctstate: 'ESTABLISHED,RELATED' }, 1, 'established', [segment.loc]));
    }
    // step 2: app-to-app space (the same set for both phases)
    if (this.appDst === undefined) {
      const appMembers: string[] = [];
      const sdst = this.netSet(this.staticAppDst, `app-to-app destinations (${segment.name})`, [segment.loc]);
      if (sdst) appMembers.push(sdst);
      for (const g of ctx.dynamics) for (const ph of PHASES) appMembers.push(this.dynSet(g, ph));
      this.appDst = this.listOrSingle(appMembers, `app-to-app destinations (${segment.name})`);
    }
    const appDst = this.appDst;
    if (appDst) {
      const a2a = this.addChain('A', 'a2a', phase, this.a2aRules());
      out.push(rule({ dst: { set: appDst } }, { kind: 'goto', chain: a2a }, 2, 'app-to-app', [segment.loc]));
    }
    // step 3
    let egressAllow: AddrSet | undefined;
    if (phase === 'running' && segment.egress === 'closed') {
      out.push(rule({}, deny, 3, `segment ${segment.name} egress closed`, [segment.loc]));
      this.asgBuckets(phase, undefined, true);
      return out;
    }
    if (phase === 'running' && segment.egress === 'restricted') {
      egressAllow = (segment.egressAllow ?? AddrSet.empty()).family(this.f);
      const ea = this.netSet(egressAllow, `egress_allow of ${segment.name}`, [segment.loc]);
      if (ea) out.push(rule({ dst: { set: ea, negate: true } }, deny, 3, `outside egress_allow of ${segment.name}`, [segment.loc]));
      else {
        out.push(rule({}, deny, 3, `segment ${segment.name} egress_allow empty`, [segment.loc]));
        this.asgBuckets(phase, AddrSet.empty(), true);
        return out;
      }
    }
    // step 4
    const buckets = this.asgBuckets(phase, egressAllow, false);
    for (const b of buckets) out.push(...this.bucketRules(b, phase));
    // step 5
    out.push(rule({}, deny, 5, 'default deny', [segment.loc]));
    return out;
  }

  /**
   * App-to-app rules: one rule per class (see appClasses), source and
   * destination a dynamic group's list of both phase sets or a static group's
   * set. Step 2 asks for "the source's group" whatever its phase (SPEC §2), so
   * the rules are the same for both phase chains: built once per family, and
   * the two phase chains share one A chain. (A source reaching the running
   * chain is in no staging set, so there the list means its running set.)
   */
  private a2aCache?: PlanRule[];
  private a2aRules(): PlanRule[] {
    if (this.a2aCache) return this.a2aCache;
    const { policy, segment } = this.ctx;
    const out: PlanRule[] = [];
    const srcCache = new Map<string, string | null>();
    for (const c of this.ctx.appClasses()) {
      const r = c.rule;
      if (!protoInFamily(r.protocol, this.f)) continue;
      let src = srcCache.get(r.from);
      if (src === undefined) srcCache.set(r.from, (src = this.listOrSingle(this.groupDstSets(r.from, r.loc), `members of ${r.from}`)));
      if (!src) continue;
      let dst = this.classDst.get(c);
      if (dst === undefined) {
        // destinations do not depend on the phase: one list per class and family
        const dsts = new Set<string>();
        for (const to of c.tos) for (const d of this.groupDstSets(to, r.loc)) dsts.add(d);
        this.classDst.set(c, (dst = this.listOrSingle([...dsts], `destinations of ${r.from} ${r.protocol}`)));
      }
      if (!dst) continue;
      for (const m of c.matches) out.push(this.allow({ src: { set: src }, dst: { set: dst }, ...m }, 2, c.what, c.locs));
    }
    if (policy.policies.default === 'allow') out.push(this.allow({}, 2, 'policies.default allow', [segment.loc]));
    else out.push(rule({}, { kind: 'goto', chain: this.denyChain }, 2, 'policies.default deny', [segment.loc]));
    return (this.a2aCache = out);
  }

  private readonly dstSetsCache = new Map<string, string[]>();
  private readonly classDst = new Map<AppClass, string | null>();
  private groupDstSets(name: string, loc: SourceLoc): string[] {
    let out = this.dstSetsCache.get(name);
    if (out) return out;
    const g = this.ctx.policy.groups.get(name);
    if (!g) out = [];
    else if (g.kind === 'dynamic') out = PHASES.map((ph) => this.dynSet(name, ph));
    else {
      const s = this.netSet(g.set!.family(this.f), `group ${name}`, [g.loc ?? loc]);
      out = s ? [s] : [];
    }
    this.dstSetsCache.set(name, out);
    return out;
  }

  // ---- ASG buckets ----

  /**
   * Destination of an ASG rule in this family, and whether all of it is
   * app-to-app space (then step 2 always decides first: the rule is shadowed).
   * The set keeps the destination as written: packets to app-to-app space
   * never reach step 4, so subtracting it would only fragment the set.
   */
  private asgDest(r: AsgRule): { d: AddrSet; inApp: boolean } {
    let e = this.destCache.get(r);
    if (!e) {
      const d = r.destination.family(this.f);
      e = { d, inApp: mayContain(this.staticAppDst, d, this.f) && this.staticAppDst.contains(d) };
      this.destCache.set(r, e);
    }
    return e;
  }

  private asgBuckets(phase: Phase, egressAllow: AddrSet | undefined, allShadowed: boolean): Bucket[] {
    const { ctx, f } = this;
    const { policy, segment } = ctx;
    // who is each ASG bound to in this phase
    const boundTo = new Map<string, { global: boolean; groups: Set<string> }>();
    for (const b of policy.bindings) {
      if (!b.phases.includes(phase)) continue;
      for (const sg of b.securityGroups) {
        const e = boundTo.get(sg) ?? { global: false, groups: new Set<string>() };
        if (b.groups === null) e.global = true;
        else for (const g of b.groups) e.groups.add(g);
        boundTo.set(sg, e);
      }
    }
    const buckets = new Map<string, Bucket>();
    const asgNames = [...boundTo.keys()].sort();
    for (const name of asgNames) {
      const sg = policy.securityGroups.get(name);
      if (!sg) continue;
      const bt = boundTo.get(name)!;
      const groups = bt.global ? undefined : [...bt.groups].sort();
      // bound to an empty group list: applies to nobody
      if (groups && groups.length === 0) continue;
      const srcKey = groups ? `g\u0000${groups.join('\u0000')}` : '*';
      for (const r of sg.rules) {
        ctx.noteBound(r);
        if (!protoInFamily(r.protocol, f)) continue;
        const raw = r.destination.family(f);
        if (raw.isEmpty()) continue;
        if (allShadowed) {
          ctx.noteReach(r, false, segment.egress === 'closed' ? `segment ${segment.name} is closed for running apps` : `egress_allow of segment ${segment.name} is empty`);
          continue;
        }
        const dest = this.asgDest(r);
        let d = dest.d;
        if (dest.inApp) {
          ctx.noteReach(r, false, 'its destination is entirely app-to-app space (decided by policies, step 2)');
          continue;
        }
        if (egressAllow) {
          // only destinations inside egress_allow reach step 4: keep whichever form needs fewer CIDRs
          const inside = d.intersect(egressAllow);
          if (inside.isEmpty() || this.staticAppDst.contains(inside)) {
            ctx.noteReach(r, false, `its destination is outside egress_allow of segment ${segment.name} (restricted) or app-to-app space`);
            continue;
          }
          if (inside.cidrCount(f) <= d.cidrCount(f)) d = inside;
        }
        ctx.noteReach(r, true);
        ctx.stats.cidrsIn += raw.cidrCount(f);
        const key = `${r.log ? 0 : 1}\u0001${srcKey}`;
        let b = buckets.get(key);
        if (!b) {
          b = { srcKey, groups, log: r.log, all: [], allSets: [], ports: new Map(), ranges: new Map(), icmp: new Map() };
          buckets.set(key, b);
        }
        addToBucket(b, r, d, ctx.small);
      }
    }
    // log buckets first (a packet matched by any log:true rule is logged), then by source key
    return [...buckets.entries()].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)).map((e) => e[1]);
  }

  private bucketRules(b: Bucket, phase: Phase): PlanRule[] {
    const src = b.groups ? this.bucketSource(b.groups, phase) : undefined;
    if (b.groups && !src) return [];
    const srcMatch: PlanMatch = src ? { src: { set: src } } : {};
    const who = b.groups ? `groups ${b.groups.join(',')}` : 'global';
    const out: PlanRule[] = [];
    // locs: already deduplicated (locsOf)
    const emit = (m: PlanMatch, whatBase: string, locs: SourceLoc[], rules: AsgRule[]) => {
      const match = { ...srcMatch, ...m };
      // a rule of its own keeps its description in the comment (quoted by the renderer)
      const what = rules.length === 1 && rules[0].description ? `${whatBase}: ${rules[0].description}` : whatBase;
      if (b.log) out.push({ match, target: { kind: 'log', prefix: logPrefix('CW-ALLOW', this.ctx.segment.name) }, step: 4, what: `log ${what}`, locs });
      out.push({ match, target: { kind: 'allow' }, step: 4, what, locs });
    };
    const locsMemo = new Map<AsgRule[], SourceLoc[]>();
    const locsOf = (rules: AsgRule[]) => {
      let l = locsMemo.get(rules);
      if (!l) locsMemo.set(rules, (l = dedupeLocs(rules.map((r) => r.loc))));
      return l;
    };
    const asgNames = (rules: AsgRule[]) => [...new Set(rules.map((r) => r.asg))].join(',');
    if (b.all.length) {
      const set = this.netSet(unionAll(b.allSets), `asg all (${who})`, locsOf(b.all), true);
      if (set) emit({ dst: { set } }, `asg ${asgNames(b.all)} all`, locsOf(b.all), b.all);
    }
    if (b.ports.size) {
      const entries = [...b.ports.values()].sort((x, y) => cmpKey(x.proto, y.proto) || x.port - y.port);
      // ports listed together ("80,443") have the same contributors: one union for all of them
      const memo = new Map<string, AddrSet>();
      const byPort = entries.map((e) => {
        const k = e.rules.map((r) => `${r.asg}\u0000${r.index}`).join('\u0001');
        let u = memo.get(k);
        if (!u) memo.set(k, (u = unionAll(e.sets)));
        return { proto: e.proto, port: e.port, addrs: u };
      });
      const rules = entries.flatMap((e) => e.rules);
      const set = this.netPortSet(byPort, `asg ports (${who})`, locsOf(rules));
      if (set) emit({ dst: { set } }, `asg ${asgNames(rules)} ${summarizePorts(entries)}`, locsOf(rules), [...new Set(rules)]);
    }
    for (const e of [...b.ranges.values()].sort((x, y) => cmpKey(x.proto + portsText(x.ports), y.proto + portsText(y.ports)))) {
      const set = this.netSet(unionAll(e.sets), `asg ${e.proto} ${portsText(e.ports)} (${who})`, locsOf(e.rules), true);
      if (!set) continue;
      for (const chunk of multiportChunks(e.ports)) {
        emit({ dst: { set }, proto: e.proto, dports: chunk }, `asg ${asgNames(e.rules)} ${e.proto} ${portsText(chunk)}`, locsOf(e.rules), e.rules);
      }
    }
    for (const e of [...b.icmp.values()].sort((x, y) => cmpKey(`${x.proto}/${x.type}/${x.code}`, `${y.proto}/${y.type}/${y.code}`))) {
      const set = this.netSet(unionAll(e.sets), `asg ${e.proto} (${who})`, locsOf(e.rules), true);
      if (set) emit({ dst: { set }, proto: e.proto, icmp: { type: e.type, code: e.code } }, `asg ${asgNames(e.rules)} ${e.proto} ${icmpText(e.type, e.code)}`, locsOf(e.rules), e.rules);
    }
    return out;
  }

  /** sources of the given groups in a phase: one set (hash:net for the static ones, member sets, a list when several) */
  private bucketSource(groups: string[], phase: Phase): string | null {
    const p = this.ctx.policy;
    const statics: AddrSet[] = [];
    const members: string[] = [];
    const locs: SourceLoc[] = [];
    for (const name of groups) {
      const g = p.groups.get(name);
      if (!g) continue;
      locs.push(g.loc);
      if (g.kind === 'dynamic') members.push(this.dynSet(name, phase));
      else statics.push(g.set!.family(this.f));
    }
    const s = statics.length ? this.netSet(unionAll(statics), `sources ${groups.join(',')}`, locs) : null;
    if (s) members.unshift(s);
    return this.listOrSingle(members, `sources ${groups.join(',')} ${phase}`);
  }

  // ---- sets ----

  private register(name: string, kind: PlanSetKind, entries: number, what: string, locs: SourceLoc[]): string {
    const existing = this.sets.get(name);
    if (existing) {
      // the set serves one more entry: note where it comes from (up to 64 locations)
      for (const l of locs) {
        if (existing.locs.length >= 64) break;
        if (!existing.locs.some((e) => sameLoc(e, l))) existing.locs = [...existing.locs, l];
      }
      return name;
    }
    if (entries > this.ctx.maxSetEntries) {
      this.ctx.error(locs[0] ?? this.ctx.segment.loc,
        `the set for ${what} would hold ${entries} entries in the IPv${this.f} family, more than the maximum ${this.ctx.maxSetEntries}`,
        'fewer, larger destination ranges (aggregate the destinations) or split the entry');
    }
    const { maxelem, hashsize } = sizing(kind.type, entries);
    this.sets.set(name, { name, family: this.f, kind, entries, hashsize, maxelem, what, locs: dedupeLocs(locs).slice(0, 64) });
    return name;
  }

  private netSet(addrs: AddrSet, what: string, locs: SourceLoc[], isDest = false): string | null {
    const a = addrs.family(this.f);
    if (a.isEmpty()) return null;
    const n = ipsetEntryCount(a, this.f);
    const name = `cw${this.f}n-${a.hashWith(`net|${this.f}|${sizingKey('net', n)}|`).slice(0, 20)}`;
    if (isDest) {
      if (this.sets.has(name)) this.ctx.stats.setsShared++;
      else this.ctx.stats.cidrsOut += n;
    }
    return this.register(name, { type: 'net', addrs: a }, n, what, locs);
  }

  private netPortSet(byPort: Array<{ proto: 'tcp' | 'udp'; port: number; addrs: AddrSet }>, what: string, locs: SourceLoc[]): string | null {
    const memo = new Map<AddrSet, { addrs: AddrSet; n: number; hash: string }>();
    const info = (x: AddrSet) => {
      let i = memo.get(x);
      if (!i) {
        const addrs = x.family(this.f);
        memo.set(x, (i = { addrs, n: addrs.isEmpty() ? 0 : ipsetEntryCount(addrs, this.f), hash: addrs.hash() }));
      }
      return i;
    };
    const parts = byPort.map((e) => ({ ...e, addrs: info(e.addrs).addrs })).filter((e) => !e.addrs.isEmpty());
    if (!parts.length) return null;
    let n = 0;
    for (const e of byPort) n += info(e.addrs).n;
    const key = byPort.filter((e) => info(e.addrs).n > 0).map((e) => `${e.proto}:${e.port}=${info(e.addrs).hash}`).join('|');
    const name = `cw${this.f}p-${sha256(`netport|${this.f}|${key}|${sizingKey('net,port', n)}`).slice(0, 20)}`;
    if (this.sets.has(name)) this.ctx.stats.setsShared++;
    else this.ctx.stats.cidrsOut += n;
    return this.register(name, { type: 'net,port', byPort: parts }, n, what, locs);
  }

  /** list names by member list (app-to-app lists recur for every rule to the same groups) */
  private readonly listNames = new Map<string, string>();
  private listOrSingle(members: string[], what: string): string | null {
    if (members.length === 0) return null;
    if (members.length === 1) return members[0];
    const key = members.join(',');
    let name = this.listNames.get(key);
    if (name) return name;
    name = `cw${this.f}l-${sha256(`list|${this.f}|${key}`).slice(0, 20)}`;
    this.listNames.set(key, name);
    return this.register(name, { type: 'list', members }, members.length, what, [this.ctx.segment.loc]);
  }

  private readonly dynNames = { running: new Map<string, string>(), staging: new Map<string, string>() };
  private dynSet(group: string, phase: Phase): string {
    const names = this.dynNames[phase];
    let name = names.get(group);
    if (name) return name;
    name = dynamicSetName(group, phase, this.f);
    names.set(group, name);
    if (!this.sets.has(name)) {
      const g = this.ctx.policy.groups.get(group)!;
      this.sets.set(name, {
        name, family: this.f, kind: { type: 'dynamic', group, phase }, entries: 0,
        hashsize: DYNAMIC_SET.hashsize, maxelem: DYNAMIC_SET.maxelem, what: `${phase} members of ${group}`, locs: [g.loc],
      });
    }
    return name;
  }
}

/**
 * hashsize/maxelem with headroom (maxelem at least twice the entries). Part of
 * the content address: `create -exist` fails on a same-named set with other
 * parameters, so a change of sizing must give a new name.
 */
function sizing(type: PlanSetKind['type'], entries: number): { maxelem: number; hashsize: number } {
  if (type === 'list') return { maxelem: Math.max(8, entries), hashsize: 0 };
  // up to 1,024 entries: a bucket per entry at most, from the kernel's minimum of 64 (a 1,024-bucket table for
  // every small set took 40% of the kernel memory of a tenth of CF scale); larger sets: 4 entries per bucket
  const hashsize = Math.max(64, Math.min(1024, nextPow2(entries)), Math.min(1 << 20, nextPow2(Math.ceil(entries / 4))));
  return { maxelem: Math.max(65536, nextPow2(entries * 2)), hashsize };
}

function sizingKey(type: PlanSetKind['type'], entries: number): string {
  const s = sizing(type, entries);
  return `${s.hashsize}/${s.maxelem}`;
}

/** entries of a hash:net set: the minimal CIDR cover, with a /0 written as two /1 (see render/ipset.ts) */
function ipsetEntryCount(a: AddrSet, f: Family): number {
  const n = a.cidrCount(f);
  return n === 1 && a.equals(AddrSet.all().family(f)) ? 2 : n;
}

function addToBucket(b: Bucket, r: AsgRule, d: AddrSet, small: number): void {
  if (r.protocol === 'all') {
    b.all.push(r);
    b.allSets.push(d);
  } else if (r.protocol === 'tcp' || r.protocol === 'udp') {
    const ports = r.ports ?? [{ from: 1, to: 65535 }];
    // single ports only: a range would expand into one entry per port and CIDR
    if (portCount(ports) <= small && ports.every((p) => p.from === p.to)) {
      for (const pr of ports) {
        for (let p = pr.from; p <= pr.to; p++) {
          const k = `${r.protocol}:${p}`;
          let e = b.ports.get(k);
          if (!e) b.ports.set(k, (e = { proto: r.protocol, port: p, rules: [], sets: [] }));
          e.rules.push(r);
          e.sets.push(d);
        }
      }
    } else {
      const k = `${r.protocol}|${portsText(ports)}`;
      let e = b.ranges.get(k);
      if (!e) b.ranges.set(k, (e = { proto: r.protocol, ports, rules: [], sets: [] }));
      e.rules.push(r);
      e.sets.push(d);
    }
  } else {
    const type = r.icmpType ?? -1;
    const code = type === -1 ? -1 : (r.icmpCode ?? -1);
    const k = `${r.protocol}|${type}|${code}`;
    let e = b.icmp.get(k);
    if (!e) b.icmp.set(k, (e = { proto: r.protocol, type, code, rules: [], sets: [] }));
    e.rules.push(r);
    e.sets.push(d);
  }
}

/** match fields for a protocol/port/icmp spec; several when the ports need more than one multiport rule */
function protoMatches(protocol: AppRule['protocol'], ports?: PortRange[], type?: number, code?: number): PlanMatch[] {
  if (protocol === 'all') return [{}];
  if (protocol === 'tcp' || protocol === 'udp') {
    if (!ports || ports.length === 0) return [{ proto: protocol }];
    return multiportChunks(ports).map((c) => ({ proto: protocol, dports: c }));
  }
  if (type === undefined || type === -1) return [{ proto: protocol, icmp: { type: -1, code: -1 } }];
  return [{ proto: protocol, icmp: { type, code: code ?? -1 } }];
}

export function protoInFamily(p: AppRule['protocol'], f: Family): boolean {
  return !((p === 'icmp' && f === 6) || (p === 'icmpv6' && f === 4));
}

function rule(match: PlanMatch, target: PlanTarget, step: PlanRule['step'], what: string, locs: SourceLoc[]): PlanRule {
  return { match, target, step, what, locs: dedupeLocs(locs) };
}

function dedupeLocs(locs: SourceLoc[]): SourceLoc[] {
  if (locs.length < 2) return locs;
  // a few locations (most rules): compare pairwise, allocating nothing when they are distinct
  if (locs.length <= 8) {
    let dup = false;
    for (let i = 1; i < locs.length && !dup; i++) for (let j = 0; j < i; j++) if (sameLoc(locs[i], locs[j])) { dup = true; break; }
    if (!dup) return locs;
  }
  // numeric keys per file (line and column of one-line JSON policies both fit: line < 2^21, col < 2^32)
  const seen = new Map<string, Set<number>>();
  const out: SourceLoc[] = [];
  for (const l of locs) {
    let s = seen.get(l.file);
    if (!s) seen.set(l.file, (s = new Set()));
    const k = l.line * 4294967296 + l.col;
    if (!s.has(k)) {
      s.add(k);
      out.push(l);
    }
  }
  return out.length === locs.length ? locs : out;
}

function sameLoc(a: SourceLoc, b: SourceLoc): boolean {
  return a === b || (a.line === b.line && a.col === b.col && a.file === b.file);
}

/** `<tag> <segment> `, at most 29 characters (the kernel's LOG prefix limit), only safe characters */
export function logPrefix(tag: string, segment: string): string {
  const clean = segment.replace(/[^A-Za-z0-9._:-]/g, '_');
  return `${tag} ${clean}`.slice(0, 28) + ' ';
}

function summarizePorts(entries: Array<{ proto: string; port: number }>): string {
  const byProto = new Map<string, number[]>();
  for (const e of entries) byProto.set(e.proto, [...(byProto.get(e.proto) ?? []), e.port]);
  return [...byProto.entries()].map(([p, ports]) => `${p} ${ports.slice(0, 8).join(',')}${ports.length > 8 ? ',...' : ''}`).join(' ');
}

function icmpText(type: number, code: number): string {
  return type === -1 ? 'any type' : code === -1 ? `type ${type}` : `type ${type} code ${code}`;
}

function cmpKey(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** names of the chains reachable from the top rules */
function reachable(top: PlanRule[], chains: Map<string, PlanChain>): Set<string> {
  const seen = new Set<string>();
  const stack = top.filter((r) => r.target.kind === 'goto').map((r) => (r.target as { chain: string }).chain);
  while (stack.length) {
    const c = stack.pop()!;
    if (seen.has(c)) continue;
    seen.add(c);
    for (const r of chains.get(c)?.rules ?? []) if (r.target.kind === 'goto') stack.push(r.target.chain);
  }
  return seen;
}
