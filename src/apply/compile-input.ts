/**
 * POLICY + --segment -> payload, through the policy loader, the compiler and
 * the renderers (the same path as `cellwall compile`).
 */
import { CellwallError } from '../errors.js';
import type { Payload } from './payload.js';

export async function compileToPayload(policyFile: string, segment: string): Promise<{ payload: Payload; policyHash: string }> {
  void policyFile; void segment;
  throw new CellwallError('apply POLICY: the compiler is not available in this build yet; use `cellwall compile --out DIR` and `apply --payload DIR`');
}
