/**
 * Kernel test harness: a small routed topology in network namespaces.
 *
 *   side namespaces (app, vpc, inet, ...)  <-veth->  cell namespace (forwards, rules loaded here)
 *
 * Every namespace is named `cwt-<rand>-<role>`; veths are created straight into
 * the namespaces, so nothing is ever added to the host's namespace. Each side
 * runs one agent (./agent.mjs): TCP/UDP echo servers on PORTS and the prober
 * used as that side's client. destroy() (and a process 'exit' hook) deletes
 * every namespace made here, also when a test fails.
 */
import { execFile, execFileSync, spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { isIPv6 } from 'node:net';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

export type Outcome = 'ok' | 'refused' | 'timeout' | 'error';
export interface ProbeResult { outcome: Outcome; detail: string }
export type Proto = 'tcp' | 'udp' | 'icmp';
export type Family = 4 | 6;

/** ports every side serves (TCP and UDP echo); probes must use one of these */
export const PORTS = [22, 53, 80, 443, 3306, 5432, 6379, 8080];

/** one subnet on a side's link: the cell's address (with prefix) and the side's addresses */
export interface LinkNet { gw: string; hosts: string[] }
export interface SideSpec { role: string; nets: LinkNet[] }

/**
 * The topology: containers in 10.255.0.0/16 + fd00:255::/64, a VPC
 * service in 10.0.0.0/8 + fd00:10::/64, the internet in 203.0.113.0/24,
 * 198.51.100.0/24 and 2001:db8::/64.
 */
export const DEFAULT_SIDES: SideSpec[] = [
  {
    role: 'app',
    nets: [
      { gw: '10.255.0.1/16', hosts: ['10.255.0.2', '10.255.0.3', '10.255.0.4', '10.255.0.5', '10.255.0.6'] },
      { gw: 'fd00:255::1/64', hosts: ['fd00:255::2', 'fd00:255::3', 'fd00:255::4', 'fd00:255::5', 'fd00:255::6'] },
    ],
  },
  {
    role: 'vpc',
    nets: [
      { gw: '10.0.0.1/24', hosts: ['10.0.0.10', '10.0.0.11'] },
      { gw: 'fd00:10::1/64', hosts: ['fd00:10::10', 'fd00:10::11'] },
    ],
  },
  {
    role: 'inet',
    nets: [
      { gw: '203.0.113.1/24', hosts: ['203.0.113.10', '203.0.113.11'] },
      { gw: '198.51.100.1/24', hosts: ['198.51.100.10'] },
      { gw: '2001:db8::1/64', hosts: ['2001:db8::10', '2001:db8::11'] },
    ],
  },
];

const AGENT = join(fileURLToPath(new URL('.', import.meta.url)), 'agent.mjs');
const EXEC_TIMEOUT_MS = 20_000;

export interface ExecResult { stdout: string; stderr: string; code: number }

/** execFile with a timeout; never a shell. Resolves also on failure (see code). */
export function run(argv: string[], timeoutMs = EXEC_TIMEOUT_MS): Promise<ExecResult> {
  return new Promise((resolve) => {
    execFile(argv[0], argv.slice(1), { timeout: timeoutMs, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
      resolve({ stdout: String(stdout), stderr: String(stderr) + (err && code === 1 && !stderr ? err.message : ''), code });
    });
  });
}

/** run, and throw with the output when the exit code is not 0 */
export async function runOk(argv: string[], timeoutMs = EXEC_TIMEOUT_MS): Promise<string> {
  const r = await run(argv, timeoutMs);
  if (r.code !== 0) throw new Error(`${argv.join(' ')} exited ${r.code}\n${r.stderr}${r.stdout}`);
  return r.stdout;
}

// every namespace created by this process, removed at exit whatever happens
const live = new Set<string>();
function deleteLive(): void {
  for (const ns of live) {
    try {
      execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore', timeout: 5000 });
    } catch {
      /* best effort */
    }
  }
  live.clear();
}
process.on('exit', deleteLive);
// a killed test run (timeout, Ctrl-C) skips 'exit' handlers unless the signal is handled
for (const [sig, n] of [['SIGINT', 2], ['SIGTERM', 15], ['SIGHUP', 1]] as const) {
  process.once(sig, () => {
    deleteLive();
    process.exit(128 + n);
  });
}

class Agent {
  private next = 1;
  private waiting = new Map<number, (r: ProbeResult) => void>();
  private constructor(private child: ChildProcessWithoutNullStreams) {}

  static start(ns: string, addrs: string[]): Promise<Agent> {
    const argv = ['netns', 'exec', ns, process.execPath, AGENT, PORTS.join(','), addrs.join(',')];
    const child = spawn('ip', argv, { stdio: 'pipe' });
    const agent = new Agent(child);
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += String(d)));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`agent in ${ns} did not start: ${stderr}`)), EXEC_TIMEOUT_MS);
      const lines = createInterface({ input: child.stdout });
      lines.on('line', (line) => {
        const msg = JSON.parse(line) as { ready?: boolean; error?: string; id?: number } & ProbeResult;
        if (msg.ready !== undefined) {
          clearTimeout(timer);
          if (msg.ready) resolve(agent);
          else reject(new Error(`agent in ${ns} failed: ${msg.error}`));
          return;
        }
        const done = agent.waiting.get(msg.id!);
        agent.waiting.delete(msg.id!);
        done?.({ outcome: msg.outcome, detail: msg.detail });
      });
      child.on('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`agent in ${ns} exited ${code}: ${stderr}`));
        for (const done of agent.waiting.values()) done({ outcome: 'error', detail: `agent exited ${code}` });
        agent.waiting.clear();
      });
    });
  }

  probe(req: { op: Proto; src: string; dst: string; port?: number; timeoutMs: number }): Promise<ProbeResult> {
    const id = this.next++;
    return new Promise((resolve) => {
      // safety net: the agent bounds every probe itself; this only guards against a stuck agent
      const guard = setTimeout(() => {
        this.waiting.delete(id);
        resolve({ outcome: 'error', detail: 'agent did not answer' });
      }, req.timeoutMs + 5000);
      this.waiting.set(id, (r) => {
        clearTimeout(guard);
        resolve(r);
      });
      this.child.stdin.write(JSON.stringify({ id, ...req }) + '\n');
    });
  }

  stop(): void {
    this.child.stdin.end();
    this.child.kill('SIGKILL');
  }
}

export interface ProbeOptions {
  /** how long to wait before calling it a timeout (default 1000 ms) */
  timeoutMs?: number;
}

/** iptables-save -c line with its counters */
export interface CountedRule { packets: number; bytes: number; rule: string }

export class Topology {
  readonly cell: string;
  readonly ns = new Map<string, string>();
  private agents = new Map<string, Agent>();
  /** address -> role of the side that holds it */
  private owner = new Map<string, string>();

  private constructor(readonly id: string, readonly sides: SideSpec[]) {
    this.cell = `cwt-${id}-cell`;
    for (const s of sides) this.ns.set(s.role, `cwt-${id}-${s.role}`);
  }

  /** build the namespaces, links, addresses, routes and agents; on failure everything made is removed */
  static async create(sides: SideSpec[] = DEFAULT_SIDES): Promise<Topology> {
    const t = new Topology(randomBytes(3).toString('hex'), sides);
    try {
      await t.build();
    } catch (e) {
      await t.destroy();
      throw e;
    }
    return t;
  }

  private async build(): Promise<void> {
    const all = [this.cell, ...this.ns.values()];
    for (const ns of all) {
      await runOk(['ip', 'netns', 'add', ns]);
      live.add(ns); // only once it is ours: a name clash must not delete someone else's namespace
      await runOk(['ip', '-n', ns, 'link', 'set', 'lo', 'up']);
      // no duplicate address detection: link-local addresses (used for neighbour discovery) are usable at once
      await runOk(['ip', 'netns', 'exec', ns, 'sysctl', '-q', '-w', 'net.ipv6.conf.all.accept_dad=0', 'net.ipv6.conf.default.accept_dad=0']);
    }
    const cellSysctls = [
      'net.ipv4.ip_forward=1',
      'net.ipv6.conf.all.forwarding=1',
      // REJECT answers must not be rate-limited, or a refusal would look like a timeout
      'net.ipv4.icmp_ratelimit=0',
      'net.ipv6.icmp.ratelimit=0',
    ];
    await runOk(['ip', 'netns', 'exec', this.cell, 'sysctl', '-q', '-w', ...cellSysctls]);
    for (const side of this.sides) {
      const ns = this.ns.get(side.role)!;
      const cellIf = `to-${side.role}`.slice(0, 15);
      await runOk(['ip', 'link', 'add', cellIf, 'netns', this.cell, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
      for (const net of side.nets) {
        const v6 = isIPv6(net.gw.split('/')[0]);
        const prefix = net.gw.split('/')[1];
        const nodad = v6 ? ['nodad'] : [];
        await runOk(['ip', '-n', this.cell, 'addr', 'add', net.gw, 'dev', cellIf, ...nodad]);
        for (const h of net.hosts) {
          await runOk(['ip', '-n', ns, 'addr', 'add', `${h}/${prefix}`, 'dev', 'eth0', ...nodad]);
          this.owner.set(h, side.role);
        }
      }
      await runOk(['ip', '-n', this.cell, 'link', 'set', cellIf, 'up']);
      await runOk(['ip', '-n', ns, 'link', 'set', 'eth0', 'up']);
      for (const fam of [4, 6] as const) {
        const gw = side.nets.find((n) => isIPv6(n.gw.split('/')[0]) === (fam === 6));
        if (gw) await runOk(['ip', `-${fam}`, '-n', ns, 'route', 'add', 'default', 'via', gw.gw.split('/')[0]]);
      }
    }
    await this.warmUp();
    for (const side of this.sides) {
      const addrs = side.nets.flatMap((n) => n.hosts);
      this.agents.set(side.role, await Agent.start(this.ns.get(side.role)!, addrs));
    }
  }

  /**
   * Wait for the veths' carrier and resolve every neighbour once (the cell pings
   * every side address), so that the first probe of a test is not lost to
   * link setup and reads as a false timeout.
   */
  private async warmUp(): Promise<void> {
    const hosts = this.sides.flatMap((s) => s.nets.flatMap((n) => n.hosts));
    await Promise.all(
      hosts.map(async (h) => {
        for (let attempt = 0; ; attempt++) {
          const r = await this.exec(this.cell, ['ping', '-n', '-c', '1', '-W', '1', h], 5000);
          if (r.code === 0) return;
          if (attempt === 4) throw new Error(`topology: ${h} unreachable from the cell: ${r.stdout}${r.stderr}`);
        }
      }),
    );
  }

  /** run argv inside namespace `ns` (a role or the cell's full name) */
  exec(ns: string, argv: string[], timeoutMs = EXEC_TIMEOUT_MS): Promise<ExecResult> {
    return run(['ip', 'netns', 'exec', this.ns.get(ns) ?? ns, ...argv], timeoutMs);
  }

  /** like exec, throws unless it exits 0 */
  execOk(ns: string, argv: string[], timeoutMs = EXEC_TIMEOUT_MS): Promise<string> {
    return runOk(['ip', 'netns', 'exec', this.ns.get(ns) ?? ns, ...argv], timeoutMs);
  }

  cellExec(argv: string[]): Promise<string> {
    return this.execOk(this.cell, argv);
  }

  /** `ipset restore`, `iptables-restore --noflush`, `ip6tables-restore --noflush` of a compile --out DIR, in the cell */
  async load(dir: string): Promise<void> {
    await this.cellExec(['ipset', 'restore', '-file', join(dir, 'ipset.restore')]);
    await this.cellExec(['iptables-restore', '--noflush', join(dir, 'iptables.v4')]);
    await this.cellExec(['ip6tables-restore', '--noflush', join(dir, 'iptables.v6')]);
  }

  /** `--test` both rule payloads in the cell (needs the sets loaded first, as the real tools check them) */
  async testPayload(dir: string): Promise<void> {
    await this.cellExec(['iptables-restore', '--test', '--noflush', join(dir, 'iptables.v4')]);
    await this.cellExec(['ip6tables-restore', '--test', '--noflush', join(dir, 'iptables.v6')]);
  }

  /**
   * The platform's own FORWARD rules around cellwall's jump, both families.
   * `after` rules are appended (so they come after the jump loaded before).
   */
  async platform(opts: { policy: 'ACCEPT' | 'DROP'; after?: string[][] }): Promise<void> {
    for (const tool of ['iptables', 'ip6tables']) {
      await this.cellExec([tool, '-w', '-P', 'FORWARD', opts.policy]);
      for (const rule of opts.after ?? []) await this.cellExec([tool, '-w', '-A', 'FORWARD', ...rule]);
    }
  }

  /** drop every rule, chain and set in the cell, so the next payload starts clean */
  async reset(): Promise<void> {
    for (const tool of ['iptables', 'ip6tables']) {
      await this.cellExec([tool, '-w', '-P', 'FORWARD', 'ACCEPT']);
      await this.cellExec([tool, '-w', '-F']);
      await this.cellExec([tool, '-w', '-X']);
    }
    await this.cellExec(['ipset', 'flush']);
    await this.cellExec(['ipset', 'destroy']);
  }

  /** `iptables-save -c` (or ip6tables-save) of the cell's filter table */
  save(family: Family): Promise<string> {
    return this.cellExec([family === 4 ? 'iptables-save' : 'ip6tables-save', '-c', '-t', 'filter']);
  }

  /** save(), parsed: every rule with its counters */
  async counters(family: Family): Promise<CountedRule[]> {
    const out = await this.save(family);
    const rules: CountedRule[] = [];
    for (const line of out.split('\n')) {
      const m = /^\[(\d+):(\d+)\] (-A .*)$/.exec(line);
      if (m) rules.push({ packets: Number(m[1]), bytes: Number(m[2]), rule: m[3] });
    }
    return rules;
  }

  async zeroCounters(): Promise<void> {
    await this.cellExec(['iptables', '-w', '-Z']);
    await this.cellExec(['ip6tables', '-w', '-Z']);
  }

  /** the role whose namespace holds `addr` */
  roleOf(addr: string): string {
    const r = this.owner.get(addr);
    if (!r) throw new Error(`no side holds ${addr}`);
    return r;
  }

  /** one probe from `src` (an address of some side) to `dst` */
  probe(proto: Proto, src: string, dst: string, port?: number, opts: ProbeOptions = {}): Promise<ProbeResult> {
    const agent = this.agents.get(this.roleOf(src));
    if (!agent) throw new Error(`no agent for ${src}`);
    if (proto !== 'icmp' && (port === undefined || !PORTS.includes(port))) {
      throw new Error(`probe port ${port} is not served; use one of ${PORTS.join(',')}`);
    }
    return agent.probe({ op: proto, src, dst, port, timeoutMs: opts.timeoutMs ?? 1000 });
  }

  tcp(src: string, dst: string, port: number, opts?: ProbeOptions): Promise<ProbeResult> {
    return this.probe('tcp', src, dst, port, opts);
  }

  udp(src: string, dst: string, port: number, opts?: ProbeOptions): Promise<ProbeResult> {
    return this.probe('udp', src, dst, port, opts);
  }

  icmp(src: string, dst: string, opts?: ProbeOptions): Promise<ProbeResult> {
    return this.probe('icmp', src, dst, undefined, opts);
  }

  /** stop the agents and delete every namespace this topology made; safe to call twice */
  async destroy(): Promise<void> {
    for (const a of this.agents.values()) a.stop();
    this.agents.clear();
    for (const ns of [...this.ns.values(), this.cell]) {
      if (!live.has(ns)) continue;
      await run(['ip', 'netns', 'del', ns]);
      live.delete(ns);
    }
  }
}
