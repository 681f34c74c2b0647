/**
 * Plan -> the eBPF backend's files: `cellwall.bpf.o` (the fixed classifier,
 * identical for every policy) and `maps.json` (the policy: the contents of its
 * LPM-trie maps). See src/ebpf/ and docs/ebpf.md.
 */
import type { Plan } from '../compile/plan.js';
import { mapsJson, planMaps } from '../ebpf/maps.js';
import { buildObject } from '../ebpf/program.js';

export const EBPF_OBJECT = 'cellwall.bpf.o';
export const EBPF_MAPS = 'maps.json';

export function renderEbpf(plan: Plan): { [EBPF_OBJECT]: Buffer; [EBPF_MAPS]: string } {
  return { [EBPF_OBJECT]: buildObject(), [EBPF_MAPS]: mapsJson(planMaps(plan)) };
}
