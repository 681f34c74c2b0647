/**
 * What apply applies: a compiled payload dir (--payload), or POLICY compiled
 * here for --segment (policy loader, compiler and renderers loaded lazily).
 */
import { stat } from 'node:fs/promises';
import { CellwallError } from '../errors.js';
import { readPayloadDir, type Payload } from './payload.js';

export interface InputSpec { policy?: string; segment?: string; payload?: string }
export interface Input { payload: Payload; policyHash: string | null; segment: string | null; stamp: string }

/** a cheap fingerprint of the input files (mtimes), so --watch reloads only when they change */
export async function inputStamp(spec: InputSpec): Promise<string> {
  const files = spec.payload
    ? ['ipset.restore', 'iptables.v4', 'iptables.v6'].map((f) => `${spec.payload}/${f}`)
    : [spec.policy!];
  const parts: string[] = [];
  for (const f of files) {
    try { const s = await stat(f); parts.push(`${f}:${s.mtimeMs}:${s.size}`); } catch { parts.push(`${f}:missing`); }
  }
  return parts.join('|');
}

export async function loadInput(spec: InputSpec): Promise<Input> {
  const stamp = await inputStamp(spec);
  if (spec.payload) {
    const payload = await readPayloadDir(spec.payload);
    const m = payload.manifest as { policyHash?: string; policy?: { hash?: string }; segment?: string } | null;
    return { payload, policyHash: m?.policyHash ?? m?.policy?.hash ?? null, segment: spec.segment ?? m?.segment ?? null, stamp };
  }
  if (!spec.policy || !spec.segment) throw new CellwallError('apply: POLICY and --segment are required');
  const { compileToPayload } = await import('./compile-input.js');
  const { payload, policyHash } = await compileToPayload(spec.policy, spec.segment);
  return { payload, policyHash, segment: spec.segment, stamp };
}
