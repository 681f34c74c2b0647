// Fleet test topology: one operator namespace and N cell namespaces, each
// cell running its own sshd (test host key, test client key, private
// sshd_config) on a veth point-to-point link to the operator namespace.
// All namespaces are named cwt-<id>-*; addresses are 10.201.<i>.0/24 inside
// them only. Nothing connects from the host namespace: commands that talk
// ssh run under `ip netns exec <ops>`.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';

const sh = (cmd, args, opts = {}) => execFileSync(cmd, args, { stdio: 'pipe', encoding: 'utf8', timeout: 20_000, ...opts });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** the hand-written bundle for a segment and version, in the compiler's shape */
export function bundleFiles(segment, version, { description = 'dns' } = {}) {
  const stem = segment.replace(/[^a-z0-9]/g, '').slice(0, 6);
  const tag = `${stem}${version}`;
  const chain = `CW-${stem}`;
  const port = version === 1 ? '5432' : '443,8443';
  const v4 = version === 1 ? ['10.0.0.0/24', '10.0.1.7'] : ['10.0.0.0/24', '10.0.2.0/23', '10.9.9.9'];
  const v6 = version === 1 ? ['fd00:10::/64'] : ['fd00:10::/64', 'fd00:20::/64'];
  const q = description.replace(/\\/g, '\\\\').replace(/"/g, '\\"');
  const ipset = [
    `create cw-a4-${tag} hash:net family inet hashsize 64 maxelem 1024`,
    ...v4.map((e) => `add cw-a4-${tag} ${e}`),
    `create cw-a6-${tag} hash:net family inet6 hashsize 64 maxelem 1024`,
    ...v6.map((e) => `add cw-a6-${tag} ${e}`),
    `create cw-d-${stem}-r hash:net family inet hashsize 64 maxelem 1024 -exist`,
    '',
  ].join('\n');
  const rules = (fam) => [
    '*filter',
    `:${chain} - [0:0]`,
    `:${chain}-R - [0:0]`,
    `-I FORWARD 1 -j ${chain}`,
    `-A ${chain} -s ${fam === 4 ? '10.255.0.0/16' : 'fd00:255::/64'} -m comment --comment "segments.${stem}.container_network" -g ${chain}-R`,
    `-A ${chain}-R -m conntrack --ctstate ESTABLISHED,RELATED -m comment --comment "defaults.established" -j RETURN`,
    `-A ${chain}-R -p tcp -m set --match-set cw-a${fam}-${tag} dst -m multiport --dports ${port} -m comment --comment "${q}" -j RETURN`,
    `-A ${chain}-R -p udp --dport 53 -m comment --comment "security_groups.dns[0]" -j RETURN`,
    `-A ${chain}-R -m comment --comment "defaults.deny" -j REJECT`,
    'COMMIT',
    '',
  ].join('\n');
  return { 'ipset.restore': ipset, 'iptables.v4': rules(4), 'iptables.v6': rules(6) };
}

export function writeBundles(dir, segments, version, opts) {
  for (const s of segments) {
    mkdirSync(join(dir, s), { recursive: true });
    for (const [f, c] of Object.entries(bundleFiles(s, version, opts))) writeFileSync(join(dir, s, f), c);
  }
  return dir;
}

export class Fleet {
  constructor(n) {
    this.id = randomBytes(3).toString('hex');
    this.ops = `cwt-${this.id}-ops`;
    this.dir = mkdtempSync(join(tmpdir(), `cwt-fleet-${this.id}-`));
    this.cells = [];
    this.namespaces = [];
    this.sshd = [];
    this.n = n;
  }

  /**
   * create namespaces, keys, sshds. opts.slow: cell indexes whose iptables-restore sleeps;
   * opts.wrap: { [cell index]: { [tool]: sh script } } put first in that cell's PATH.
   */
  async start({ slow = [], wrap = {} } = {}) {
    const onExit = () => this.stopSync();
    process.once('exit', onExit);
    this.onExit = onExit;
    if (!existsSync('/run/sshd')) mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });
    sh('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'cwt-client', '-f', join(this.dir, 'client_key')]);
    const clientPub = readFileSync(join(this.dir, 'client_key.pub'), 'utf8').trim();
    this.addNs(this.ops);
    sh('ip', ['-n', this.ops, 'link', 'set', 'lo', 'up']);
    const known = [];
    for (let i = 0; i < this.n; i++) {
      const ns = `cwt-${this.id}-c${i}`;
      const cdir = join(this.dir, `c${i}`);
      mkdirSync(join(cdir, 'state'), { recursive: true });
      this.addNs(ns);
      sh('ip', ['link', 'add', `o${i}`, 'netns', this.ops, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
      sh('ip', ['-n', this.ops, 'addr', 'add', `10.201.${i}.1/24`, 'dev', `o${i}`]);
      sh('ip', ['-n', this.ops, 'link', 'set', `o${i}`, 'up']);
      sh('ip', ['-n', ns, 'addr', 'add', `10.201.${i}.2/24`, 'dev', 'eth0']);
      sh('ip', ['-n', ns, 'link', 'set', 'eth0', 'up']);
      sh('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
      sh('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', `cwt-host-${i}`, '-f', join(cdir, 'host_key')]);
      const hostPub = readFileSync(join(cdir, 'host_key.pub'), 'utf8').trim().split(' ').slice(0, 2).join(' ');
      known.push(`10.201.${i}.2 ${hostPub}`);
      let path = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
      if (slow.includes(i)) {
        const bin = join(cdir, 'bin');
        mkdirSync(bin);
        for (const t of ['iptables-restore', 'ip6tables-restore']) {
          writeFileSync(join(bin, t), `#!/bin/sh\nsleep 4\nexec /usr/sbin/${t} "$@"\n`);
          chmodSync(join(bin, t), 0o755);
        }
        path = `${bin}:${path}`;
      }
      if (wrap[i]) {
        const bin = join(cdir, 'wrap');
        mkdirSync(bin);
        for (const [t, text] of Object.entries(wrap[i])) {
          writeFileSync(join(bin, t), text);
          chmodSync(join(bin, t), 0o755);
        }
        path = `${bin}:${path}`;
      }
      writeFileSync(join(cdir, 'authorized_keys'),
        // HOME: keep the login shell away from the host root's ~/.bashrc (slow, and not a cell's)
        `environment="CELLWALL_STATE_DIR=${join(cdir, 'state')}",environment="PATH=${path}",environment="HOME=${cdir}" ${clientPub}\n`);
      writeFileSync(join(cdir, 'sshd_config'), [
        `ListenAddress 10.201.${i}.2:22`,
        `HostKey ${join(cdir, 'host_key')}`,
        `PidFile ${join(cdir, 'sshd.pid')}`,
        `AuthorizedKeysFile ${join(cdir, 'authorized_keys')}`,
        'UsePAM no', 'StrictModes no', 'PermitRootLogin prohibit-password', 'PasswordAuthentication no',
        'KbdInteractiveAuthentication no', 'PermitUserEnvironment yes', 'MaxStartups 100', 'MaxSessions 50',
        'LogLevel ERROR', '',
      ].join('\n'));
      const p = spawn('ip', ['netns', 'exec', ns, '/usr/sbin/sshd', '-D', '-e', '-f', join(cdir, 'sshd_config')], { stdio: 'ignore', detached: false });
      this.sshd.push(p);
      this.cells.push({ i, ns, host: `10.201.${i}.2`, dir: cdir, stateDir: join(cdir, 'state') });
    }
    writeFileSync(join(this.dir, 'known_hosts'), known.join('\n') + '\n');
    for (const c of this.cells) {
      const pid = join(c.dir, 'sshd.pid');
      for (let t = 0; t < 100 && !existsSync(pid); t++) await sleep(50);
      if (!existsSync(pid)) throw new Error(`sshd in ${c.ns} did not start`);
    }
    return this;
  }

  addNs(ns) {
    sh('ip', ['netns', 'add', ns]);
    this.namespaces.push(ns);
  }

  /** drop one cell's key from known_hosts into a separate file without it */
  knownHostsWithout(indexes) {
    const lines = readFileSync(join(this.dir, 'known_hosts'), 'utf8').split('\n').filter(Boolean);
    const f = join(this.dir, `known_hosts-${randomBytes(3).toString('hex')}`);
    writeFileSync(f, lines.filter((l) => !indexes.some((i) => l.startsWith(`10.201.${i}.2 `))).join('\n') + '\n');
    return f;
  }

  /** YAML inventory; cells: [{i, segment, name?}] */
  inventory(cells, { knownHosts = join(this.dir, 'known_hosts') } = {}) {
    const y = [
      'ssh:',
      '  user: root',
      `  identity_file: ${JSON.stringify(join(this.dir, 'client_key'))}`,
      `  known_hosts: ${JSON.stringify(knownHosts)}`,
      'cells:',
      ...cells.map((c) => `  - { name: ${JSON.stringify(c.name ?? `cell-${c.i}`)}, host: 10.201.${c.i}.2, segment: ${JSON.stringify(c.segment)} }`),
      '',
    ].join('\n');
    const f = join(this.dir, `inventory-${randomBytes(3).toString('hex')}.yml`);
    writeFileSync(f, y);
    return f;
  }

  /** run a command in the operator namespace (never the host's); onStderr sees stderr as it comes, with the process */
  run(cmd, args, { timeoutMs = 90_000, onStderr } = {}) {
    return new Promise((resolve) => {
      const p = spawn('ip', ['netns', 'exec', this.ops, cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '', err = '';
      p.stdout.on('data', (d) => { out += d; });
      p.stderr.on('data', (d) => { err += d; onStderr?.(err, p); });
      const t = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
      p.on('close', (code) => { clearTimeout(t); resolve({ code, stdout: out, stderr: err }); });
    });
  }

  /** firewall state of a cell (CW- part and cw- sets, without counters/initval), for old/new comparisons */
  cwState(i) {
    const ns = this.cells[i].ns;
    const ipt = (t) => sh('ip', ['netns', 'exec', ns, `${t}-save`, '-t', 'filter']).split('\n')
      .filter((l) => /^:CW-|^-A CW-|^-A FORWARD /.test(l)).map((l) => l.replace(/ \[\d+:\d+\]$/, '')).join('\n');
    const sets = sh('ip', ['netns', 'exec', ns, 'ipset', 'save']).split('\n')
      .filter((l) => /^(create|add) cw(-|[46][a-z]*-)/.test(l)).map((l) => l.replace(/ initval 0x[0-9a-f]+/, '')).sort().join('\n');
    return `${ipt('iptables')}\n--\n${ipt('ip6tables')}\n--\n${sets}`;
  }

  /** run a shell command inside a cell namespace (setup of kernel conditions) */
  inCell(i, cmd, args) {
    return sh('ip', ['netns', 'exec', this.cells[i].ns, cmd, ...args]);
  }

  stopSync() {
    for (const p of this.sshd) { try { p.kill('SIGTERM'); } catch { /* gone */ } }
    for (const c of this.cells) {
      try { const pid = Number(readFileSync(join(c.dir, 'sshd.pid'), 'utf8')); if (pid) process.kill(pid, 'SIGTERM'); } catch { /* gone */ }
    }
    for (const ns of this.namespaces.reverse()) {
      try { execFileSync('ip', ['netns', 'pids', ns], { stdio: 'pipe', encoding: 'utf8' }).split('\n').filter(Boolean).forEach((p) => { try { process.kill(Number(p), 'SIGKILL'); } catch { /* gone */ } }); } catch { /* gone */ }
      try { execFileSync('ip', ['netns', 'del', ns], { stdio: 'pipe' }); } catch { /* gone */ }
    }
    this.namespaces = [];
    try { rmSync(this.dir, { recursive: true, force: true }); } catch { /* ignore */ }
  }

  stop() {
    this.stopSync();
    if (this.onExit) process.off('exit', this.onExit);
  }
}
