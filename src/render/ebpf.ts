/**
 * Plan -> the eBPF backend's files: `cellwall.bpf.o` (the fixed classifier with
 * the conntrack lookup, identical for every policy), `cellwall-stateless.bpf.o`
 * (the same classifier without it, for kernels that refuse the kfuncs) and
 * `maps.json` (the policy: the contents of its LPM-trie maps). See src/ebpf/
 * and docs/ebpf.md.
 */
import type { Plan } from '../compile/plan.js';
import { mapsJson, planMaps } from '../ebpf/maps.js';
import { objectsToTry } from '../ebpf/program.js';

export const EBPF_OBJECT = 'cellwall.bpf.o';
export const EBPF_OBJECT_STATELESS = 'cellwall-stateless.bpf.o';
export const EBPF_MAPS = 'maps.json';

export function renderEbpf(plan: Plan): { [EBPF_OBJECT]: Buffer; [EBPF_OBJECT_STATELESS]: Buffer; [EBPF_MAPS]: string } {
  const [ct, stateless] = objectsToTry();
  return { [EBPF_OBJECT]: ct!.object, [EBPF_OBJECT_STATELESS]: stateless!.object, [EBPF_MAPS]: mapsJson(planMaps(plan)) };
}
