#!/usr/bin/env node
// Load time of ruleset.nft vs ipset restore + iptables-restore + ip6tables-restore for one
// compiled policy, in a throw-away cwt-* namespace (never the host's). Not part of `npm test`.
//   node test/nft/loadtime.mjs POLICY SEGMENT [RUNS]     (needs `npm run build`, root, nft, ipset)
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const [policy, segment, runsArg] = process.argv.slice(2);
if (!policy || !segment) {
  console.error('usage: node test/nft/loadtime.mjs POLICY SEGMENT [RUNS]');
  process.exit(1);
}
const runs = Number(runsArg ?? 3);
const root = fileURLToPath(new URL('../..', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'cwt-nftload-'));
const ns = `cwt-${randomBytes(3).toString('hex')}-load`;
const sh = (argv, timeout = 600_000) => execFileSync(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], timeout, maxBuffer: 1 << 30 });
const inNs = (argv) => sh(['ip', 'netns', 'exec', ns, ...argv]);
const timed = (f) => {
  const t0 = process.hrtime.bigint();
  f();
  return Number(process.hrtime.bigint() - t0) / 1e6;
};
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
let made = false;
try {
  const tc = timed(() => sh([process.execPath, join(root, 'bin', 'cellwall.js'), 'compile', policy, '--segment', segment, '--backend', 'nft', '--out', dir]));
  const size = (f) => statSync(join(dir, f)).size;
  sh(['ip', 'netns', 'add', ns]);
  made = true;
  const clean = () => {
    for (const tool of ['iptables', 'ip6tables']) for (const op of ['-F', '-X']) inNs([tool, '-w', op]);
    inNs(['ipset', 'flush']); // empties list:set sets, which hold references to their members
    inNs(['ipset', 'destroy']);
    // only our table (an `nft flush ruleset` here would leave the ipsets pinned by iptables-nft)
    inNs(['nft', 'add', 'table', 'inet', 'cellwall']);
    inNs(['nft', 'delete', 'table', 'inet', 'cellwall']);
  };
  const ipt = () => {
    inNs(['ipset', 'restore', '-file', join(dir, 'ipset.restore')]);
    inNs(['iptables-restore', '--noflush', join(dir, 'iptables.v4')]);
    inNs(['ip6tables-restore', '--noflush', join(dir, 'iptables.v6')]);
  };
  const nft = () => inNs(['nft', '-f', join(dir, 'ruleset.nft')]);
  const r = { cold: { nft: [], ipt: [] }, reload: { nft: [], ipt: [] }, check: [] };
  for (let i = 0; i < runs; i++) {
    clean();
    r.check.push(timed(() => inNs(['nft', '-c', '-f', join(dir, 'ruleset.nft')])));
    r.cold.nft.push(timed(nft));
    r.reload.nft.push(timed(nft));
    clean();
    r.cold.ipt.push(timed(ipt));
  }
  const out = {
    policy, segment, runs, compileMs: Math.round(tc),
    bytes: { 'ruleset.nft': size('ruleset.nft'), 'ipset.restore + iptables.v4 + iptables.v6': size('ipset.restore') + size('iptables.v4') + size('iptables.v6') },
    medianMs: {
      'nft -c -f': Math.round(median(r.check)),
      'nft -f (empty cell)': Math.round(median(r.cold.nft)),
      'nft -f (reload over itself)': Math.round(median(r.reload.nft)),
      'ipset restore + iptables-restore + ip6tables-restore (empty cell)': Math.round(median(r.cold.ipt)),
    },
  };
  console.log(JSON.stringify(out, null, 2));
} finally {
  if (made) sh(['ip', 'netns', 'del', ns]);
  rmSync(dir, { recursive: true, force: true });
}
