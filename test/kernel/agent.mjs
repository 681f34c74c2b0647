// Per-namespace test agent, started by test/kernel/netns.ts as
//   ip netns exec <ns> node agent.mjs <port,port,...> <addr,addr,...>
// It is both the servers and the client of a namespace:
// - serves TCP echo on every given port (one dual-stack socket per port) and
//   UDP echo on every given port of every given address (one socket per
//   address, so a reply leaves from the address the request went to: a
//   connected UDP client ignores datagrams from any other address);
// - reads probe requests from stdin, one JSON object per line
//   {id, op: 'tcp'|'udp'|'icmp', src, dst, port?, timeoutMs}
//   and answers on stdout {id, outcome: 'ok'|'refused'|'timeout', detail}.
// "ok" means the payload came back (so replies passed too), "refused" a quick
// rejection (TCP RST, ICMP unreachable), "timeout" nothing within timeoutMs.
// Plain JavaScript so it runs without a build step.
import net from 'node:net';
import dgram from 'node:dgram';
import readline from 'node:readline';
import { execFile } from 'node:child_process';

const ports = (process.argv[2] ?? '').split(',').filter(Boolean).map(Number);
const addrs = (process.argv[3] ?? '').split(',').filter(Boolean);
const PAYLOAD = 'cellwall-probe\n';

function listenTcp(port) {
  return new Promise((resolve, reject) => {
    const srv = net.createServer((s) => {
      s.on('error', () => {});
      s.pipe(s);
    });
    srv.on('error', reject);
    srv.listen({ host: '::', port, ipv6Only: false }, resolve);
  });
}

function listenUdp(address, port) {
  return new Promise((resolve, reject) => {
    const sock = dgram.createSocket(net.isIPv6(address) ? 'udp6' : 'udp4');
    sock.on('error', reject);
    sock.on('message', (msg, rinfo) => sock.send(msg, rinfo.port, rinfo.address));
    sock.bind({ address, port }, resolve);
  });
}

/** quick rejections, as the socket layer reports them */
const REFUSED = new Set(['ECONNREFUSED', 'ECONNRESET', 'EHOSTUNREACH', 'ENETUNREACH', 'EACCES', 'EPERM']);

function tcp({ src, dst, port, timeoutMs }) {
  return new Promise((resolve) => {
    let done = false;
    let got = '';
    const s = net.connect({ host: dst, port, localAddress: src });
    const finish = (outcome, detail) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s.destroy();
      resolve({ outcome, detail });
    };
    const timer = setTimeout(() => finish('timeout', got ? 'connected, no echo' : 'no answer'), timeoutMs);
    s.setEncoding('utf8');
    s.on('connect', () => s.write(PAYLOAD));
    s.on('data', (d) => {
      got += d;
      if (got === PAYLOAD) finish('ok', 'echo');
    });
    s.on('error', (e) => finish(REFUSED.has(e.code) ? 'refused' : 'error', e.code ?? e.message));
    s.on('close', () => finish('error', 'closed before echo'));
  });
}

function udp({ src, dst, port, timeoutMs }) {
  return new Promise((resolve) => {
    let done = false;
    const sock = dgram.createSocket(net.isIPv6(dst) ? 'udp6' : 'udp4');
    const finish = (outcome, detail) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      try { sock.close(); } catch { /* already closed */ }
      resolve({ outcome, detail });
    };
    const timer = setTimeout(() => finish('timeout', 'no answer'), timeoutMs);
    sock.on('error', (e) => finish(REFUSED.has(e.code) ? 'refused' : 'error', e.code ?? e.message));
    sock.on('message', (msg) => finish(msg.toString() === PAYLOAD ? 'ok' : 'error', 'reply'));
    sock.bind({ address: src, port: 0 }, () => {
      sock.connect(port, dst, (err) => {
        if (err) return finish('error', err.code ?? err.message);
        sock.send(PAYLOAD);
      });
    });
  });
}

function icmp({ src, dst, timeoutMs }) {
  const secs = Math.max(1, Math.ceil(timeoutMs / 1000));
  const argv = [net.isIPv6(dst) ? '-6' : '-4', '-n', '-c', '1', '-W', String(secs), '-I', src, dst];
  return new Promise((resolve) => {
    execFile('ping', argv, { timeout: timeoutMs + 2000 }, (err, stdout, stderr) => {
      const out = `${stdout}\n${stderr}`;
      if (!err) return resolve({ outcome: 'ok', detail: 'echo reply' });
      if (/unreachable|prohibited/i.test(out)) return resolve({ outcome: 'refused', detail: out.trim().split('\n')[1] ?? out.trim() });
      if (/0 received|100% packet loss/.test(out)) return resolve({ outcome: 'timeout', detail: 'no reply' });
      resolve({ outcome: 'error', detail: out.trim() });
    });
  });
}

const ops = { tcp, udp, icmp };

async function main() {
  for (const p of ports) {
    await listenTcp(p);
    for (const a of addrs) await listenUdp(a, p);
  }
  process.stdout.write(JSON.stringify({ ready: true }) + '\n');
  const rl = readline.createInterface({ input: process.stdin });
  rl.on('line', async (line) => {
    let req;
    try {
      req = JSON.parse(line);
    } catch {
      return;
    }
    const op = ops[req.op];
    const res = op ? await op(req) : { outcome: 'error', detail: `unknown op ${req.op}` };
    process.stdout.write(JSON.stringify({ id: req.id, ...res }) + '\n');
  });
  // the harness closing stdin (or dying) ends the agent
  rl.on('close', () => process.exit(0));
}

main().catch((e) => {
  process.stdout.write(JSON.stringify({ ready: false, error: String(e?.message ?? e) }) + '\n');
  process.exit(1);
});
