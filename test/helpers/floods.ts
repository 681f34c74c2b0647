/**
 * Dense traffic while a rule set is swapped (test/nft/switch.kernel.test.ts,
 * test/fleet/push-nft.test.ts). Both floods are bounded in count and time.
 */
import { spawn } from 'node:child_process';

/** runs a command in the cell namespace (argv[0] is the program) */
export type CellRun = (argv: string[]) => Promise<string> | string;

/**
 * A ping flood from namespace `ns` to `dst` (one echo request every 0.2 ms, at most 300000 or 60 s), until
 * stop(). Echo requests refused by the cell come back as errors.
 */
export function pingFlood(ns: string, dst: string, src?: string): { stop(): Promise<{ sent: number; received: number; errors: number }> } {
  const child = spawn('ip', ['netns', 'exec', ns, 'ping', '-q', '-n', ...(src ? ['-I', src] : []), '-i', '0.0002', '-c', '300000', '-w', '60', dst],
    { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d) => (out += String(d)));
  child.stderr.on('data', (d) => (out += String(d)));
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  return {
    async stop() {
      if (child.exitCode === null) child.kill('SIGINT');
      await exited;
      const m = /(\d+) packets transmitted, (\d+) received(?:, \+(\d+) errors)?/.exec(out);
      if (!m) throw new Error(`ping ${src ?? ns} -> ${dst}: ${out}`);
      return { sent: Number(m[1]), received: Number(m[2]), errors: Number(m[3] ?? 0) };
    },
  };
}

/**
 * UDP datagrams from `src` (in namespace `ns`) to `dst`:53 as fast as node sends them (at most 2,000,000 or
 * 60 s), until stop(). A second table in the cell, `inet cwtwatch`, counts them on the forward hook before
 * cellwall's table (priority -10) and after it (priority 10): when the cell refuses them, a reject is final,
 * so none may arrive after it. (One socket, one flow: a single datagram let through makes the flow
 * established, and the rest follow it.)
 */
export async function udpFlood(ns: string, src: string, dst: string, cell: CellRun): Promise<{ stop(): Promise<{ sent: number; passed: number }> }> {
  const match = `ip saddr ${src} ip daddr ${dst} udp dport 53 counter`;
  await cell(['sh', '-c', 'nft delete table inet cwtwatch 2>/dev/null; nft add table inet cwtwatch'
    + ` && nft add chain inet cwtwatch pre '{ type filter hook forward priority -10; policy accept; }' && nft add rule inet cwtwatch pre ${match}`
    + ` && nft add chain inet cwtwatch post '{ type filter hook forward priority 10; policy accept; }' && nft add rule inet cwtwatch post ${match}`]);
  const code = `setTimeout(()=>process.exit(0),60000);const d=require('dgram').createSocket('udp4');d.bind(0,${JSON.stringify(src)},()=>{`
    + `const b=Buffer.alloc(8);let n=0;const go=()=>{if(n++<2e6)d.send(b,53,${JSON.stringify(dst)},go);else process.exit(0);};go();});`;
  // `ip netns exec` execs node: this pid is node's
  const child = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', code], { stdio: 'ignore' });
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  return {
    async stop() {
      if (child.exitCode === null) child.kill('SIGKILL');
      await exited;
      const count = async (chain: string) => Number(/counter packets (\d+)/.exec(await cell(['nft', 'list', 'chain', 'inet', 'cwtwatch', chain]))?.[1] ?? NaN);
      const r = { sent: await count('pre'), passed: await count('post') };
      await cell(['nft', 'delete', 'table', 'inet', 'cwtwatch']);
      return r;
    },
  };
}
