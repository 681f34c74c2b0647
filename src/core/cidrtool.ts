/**
 * `cellwall cidr`: the address core as a Unix tool (like iprange). Input: one
 * entry per line (comma lists allowed, `#` comments), files or stdin. Output:
 * one CIDR per line, v4 first then v6, sorted by address.
 */
import { readFileSync } from 'node:fs';
import { CellwallError } from '../errors.js';
import { aggregateText, AddrSet, Lookup, parseLines, renderText, type InputErrors, type LineError } from './index.js';

export interface CidrOptions {
  reduce?: string;
  reduceEntries?: string;
  skipInvalid?: boolean;
  strict?: boolean;
  json?: boolean;
  bareHosts?: boolean;
}

export interface CidrIo {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
}

function readInput(file: string): Uint8Array {
  if (file === '-') {
    try {
      return readFileSync(0);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EAGAIN') return readFileSync('/dev/stdin');
      throw e;
    }
  }
  return readFileSync(file);
}

const label = (file: string) => (file === '-' ? '<stdin>' : file);

function intOption(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v)) throw new CellwallError(`${name}: expected a non-negative integer, got "${v}"`);
  return Number(v);
}

/**
 * Report bad lines. Without --skip-invalid they are errors: printed, exit 1,
 * nothing on stdout. With it they are warnings and processing goes on.
 * Returns true when the command must stop.
 */
function reportBad(io: CidrIo, opts: CidrOptions, bad: Array<{ file: string; e: LineError }>): boolean {
  if (bad.length === 0) return false;
  if (opts.json && !opts.skipInvalid) {
    io.stdout.write(JSON.stringify({ ok: false, errors: bad.map(({ file, e }) => ({ file: label(file), ...e })) }, null, 2) + '\n');
  }
  const kind = opts.skipInvalid ? 'warning: ' : '';
  const tail = opts.skipInvalid ? ' (skipped)' : '';
  io.stderr.write(bad.map(({ file, e }) => `${label(file)}:${e.line}: ${kind}${e.reason}${tail}\n`).join(''));
  return !opts.skipInvalid;
}

function flatten(files: string[], errs: InputErrors[]): Array<{ file: string; e: LineError }> {
  return errs.flatMap((x) => x.errors.map((e) => ({ file: files[x.input], e })));
}

function renderOpts(opts: CidrOptions) {
  return {
    strict: opts.strict !== false,
    reduce: intOption('--reduce', opts.reduce),
    reduceEntries: intOption('--reduce-entries', opts.reduceEntries),
    bare: opts.bareHosts === true,
  };
}

function writeList(io: CidrIo, opts: CidrOptions, text: Uint8Array, extra: Record<string, unknown>, skipped: number): void {
  if (!opts.json) { io.stdout.write(text); return; }
  const s = Buffer.from(text.buffer, text.byteOffset, text.byteLength).toString('latin1');
  const cidrs = s === '' ? [] : s.slice(0, -1).split('\n');
  io.stdout.write(JSON.stringify({ ok: true, ...extra, skipped, out: cidrs.length, cidrs }) + '\n');
}

/** cidr aggregate [FILE...] */
export function aggregate(files: string[], opts: CidrOptions, io: CidrIo): number {
  const inputs = files.length ? files : ['-'];
  const ro = renderOpts(opts);
  const r = aggregateText(inputs.map(readInput), ro);
  const bad = flatten(inputs, r.errors);
  if (reportBad(io, opts, bad)) return 1;
  writeList(io, opts, r.text, { in: r.count }, bad.length);
  return 0;
}

function loadSet(file: string, opts: CidrOptions, bad: Array<{ file: string; e: LineError }>): { set: AddrSet; count: number } {
  const r = parseLines(readInput(file), { strict: opts.strict !== false });
  bad.push(...r.errors.map((e) => ({ file, e })));
  return { set: r.set, count: r.count };
}

/** cidr exclude A B: A minus B */
export function exclude(a: string, b: string, opts: CidrOptions, io: CidrIo): number {
  if (a === '-' && b === '-') throw new CellwallError('cidr exclude: A and B cannot both be stdin');
  const ro = renderOpts(opts);
  const bad: Array<{ file: string; e: LineError }> = [];
  const A = loadSet(a, opts, bad), B = loadSet(b, opts, bad);
  if (reportBad(io, opts, bad)) return 1;
  const text = renderText(A.set.difference(B.set), ro);
  writeList(io, opts, text, { in: A.count, excluded: B.count }, bad.length);
  return 0;
}

/** cidr contains SET ADDR...: the CIDR of SET's aggregate that holds each address; exit 1 if any is outside */
export function contains(setFile: string, addrs: string[], opts: CidrOptions, io: CidrIo): number {
  const bad: Array<{ file: string; e: LineError }> = [];
  const { set } = loadSet(setFile, opts, bad);
  if (reportBad(io, opts, bad)) return 1;
  const ids = Lookup.ofCidrs(set).find(addrs);
  const cidrs = set.toCidrs();
  const rows = addrs.map((address, i) => ({ address, match: ids[i] >= 0 ? cidrs[ids[i]] : null }));
  const missing = rows.filter((r) => r.match === null);
  if (opts.json) {
    io.stdout.write(JSON.stringify({ ok: missing.length === 0, results: rows }, null, 2) + '\n');
  } else {
    io.stdout.write(rows.filter((r) => r.match !== null).map((r) => `${r.match}\n`).join(''));
    io.stderr.write(missing.map((r) => `cellwall: ${r.address} is not in ${label(setFile)}\n`).join(''));
  }
  return missing.length ? 1 : 0;
}

/**
 * Fast path for `cellwall cidr aggregate ...` used by bin/cellwall.js before
 * loading commander and the rest of the CLI (startup time is most of the run
 * time of a Unix filter). Handles only plain invocations; returns null when
 * the full CLI must take over (help, unknown options, unexpected errors).
 */
export function fastCidr(args: string[], io: CidrIo = { stdout: process.stdout, stderr: process.stderr }): number | null {
  if (args[0] !== 'aggregate') return null;
  const files: string[] = [];
  const opts: CidrOptions = {};
  try {
    for (let i = 1; i < args.length; i++) {
      const a = args[i];
      if (a === '-' || !a.startsWith('-')) { files.push(a); continue; }
      const eq = a.indexOf('=');
      const name = eq > 0 ? a.slice(0, eq) : a;
      const value = () => {
        const v = eq > 0 ? a.slice(eq + 1) : args[++i];
        if (v === undefined) throw new CellwallError(`option '${name} <N>' argument missing`);
        return v;
      };
      switch (name) {
        case '--reduce': opts.reduce = value(); break;
        case '--reduce-entries': opts.reduceEntries = value(); break;
        case '--skip-invalid': opts.skipInvalid = true; break;
        case '--no-strict': opts.strict = false; break;
        case '--json': opts.json = true; break;
        case '--bare-hosts': opts.bareHosts = true; break;
        default: return null;
      }
    }
    return aggregate(files, opts, io);
  } catch (e) {
    if (e instanceof CellwallError) {
      io.stderr.write(`cellwall: ${e.message}\n`);
      return e.exitCode;
    }
    return null;
  }
}
