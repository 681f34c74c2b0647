// Run inside the operator namespace: stream part of an apply stream to a cell
// over the real ssh transport, then SIGKILL the ssh client (connection killed
// mid-transfer). Usage: node killer.mjs CELL_JSON BUNDLE_DIR SEGMENT FRACTION
import { spawn } from 'node:child_process';
import { gzipSync } from 'node:zlib';
import { readBundleDir } from '../../dist/src/fleet/bundle.js';
import { buildScript, remoteCommand } from '../../dist/src/fleet/script.js';
import { sshArgs } from '../../dist/src/fleet/ssh.js';

const [cellJson, bundleDir, segment, fraction] = process.argv.slice(2);
const cell = JSON.parse(cellJson);
const cfg = { acceptNewHostKeys: false, connectTimeoutSec: 5 };
// what push sends after the bootstrap's `gz` word: the gzipped stream
const full = gzipSync(Buffer.from(buildScript('apply', readBundleDir(bundleDir, segment))));
const cut = Math.floor(full.length * Number(fraction));
const child = spawn('ssh', sshArgs(cell, cfg, remoteCommand()), { stdio: ['pipe', 'pipe', 'pipe'] });
let out = '';
child.stdout.on('data', (d) => { out += d; });
child.stdin.on('error', () => {});
child.stdin.write('gz\n');
child.stdin.write(full.subarray(0, cut));
// the bytes reach the cell, the rest never comes: kill the client
setTimeout(() => { child.kill('SIGKILL'); }, 1500);
child.on('close', (code, signal) => {
  process.stdout.write(JSON.stringify({ sent: cut, total: full.length, code, signal, out }) + '\n');
});
