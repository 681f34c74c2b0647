/**
 * POLICY + --segment -> payload, through the same path as `cellwall compile`
 * (policy loader, segment compiler, renderers).
 */
import { renderAll, requireSegment } from '../compile/cli.js';
import { compileSegment } from '../compile/index.js';
import { loadPolicy } from '../policy/index.js';
import type { Payload } from './payload.js';

export async function compileToPayload(policyFile: string, segment: string): Promise<{ payload: Payload; policyHash: string }> {
  const policy = await loadPolicy(policyFile);
  const seg = requireSegment(policy, segment);
  const files = renderAll(compileSegment(policy, seg).plan);
  return {
    payload: {
      ipset: files['ipset.restore'], v4: files['iptables.v4'], v6: files['iptables.v6'],
      manifest: JSON.parse(files['manifest.json']) as Record<string, unknown>,
      source: `${policyFile} --segment ${seg}`,
    },
    policyHash: policy.hash,
  };
}
