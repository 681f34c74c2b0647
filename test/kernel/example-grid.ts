/**
 * The fixed probe grid of the example scenarios (test/nft/scenarios.test.ts,
 * test/ebpf/scenarios.test.ts): every example policy segment; sources .2
 * (plain running container), .3 (staging member of the first dynamic group),
 * .4/.5 (running members of the first two), IPv4 and IPv6; destinations in the
 * VPC and the internet; tcp 443/5432/8080, udp 53, icmp.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { dynamicSetName } from '../../src/policy/names.js';
import { EXAMPLES } from './cli.js';
import type { Proto } from './netns.js';

interface Doc { mode?: string; groups?: Record<string, { members?: string }>; segments: Record<string, unknown> }

export interface ExampleCase { file: string; segment: string; mode: string; dynamic: string[] }

/** every segment of every examples/*.yaml, with the policy's mode and dynamic groups */
export const exampleCases: ExampleCase[] = readdirSync(EXAMPLES).filter((f) => f.endsWith('.yaml')).sort().flatMap((f) => {
  const doc = parse(readFileSync(join(EXAMPLES, f), 'utf8')) as Doc;
  const dynamic = Object.entries(doc.groups ?? {}).filter(([, g]) => g.members === 'dynamic').map(([n]) => n);
  return Object.keys(doc.segments).map((segment) => ({ file: f, segment, mode: doc.mode ?? 'tighten', dynamic }));
});

export interface Src { addr: string; phase: 'running' | 'staging'; member?: string }
/** an address in a dynamic group's ipset/nft member set */
export interface Member { set: string; addr: string }

/** the grid's sources and the member-set entries they need */
export function gridSources(dynamic: string[]): { srcs: Src[]; members: Member[] } {
  const srcs: Src[] = [];
  const members: Member[] = [];
  for (const [f, base] of [[4, '10.255.0.'], [6, 'fd00:255::']] as const) {
    srcs.push({ addr: `${base}2`, phase: 'running' });
    if (dynamic[0]) {
      srcs.push({ addr: `${base}3`, phase: 'staging', member: dynamic[0] });
      members.push({ set: dynamicSetName(dynamic[0], 'staging', f), addr: `${base}3` });
    }
    dynamic.slice(0, 2).forEach((g, i) => {
      srcs.push({ addr: `${base}${4 + i}`, phase: 'running', member: g });
      members.push({ set: dynamicSetName(g, 'running', f), addr: `${base}${4 + i}` });
    });
  }
  return { srcs, members };
}

const DSTS = { 4: ['10.0.0.10', '203.0.113.10', '198.51.100.10'], 6: ['fd00:10::10', '2001:db8::10'] };
const PROBES: Array<[Proto, number | undefined]> = [['tcp', 443], ['tcp', 5432], ['tcp', 8080], ['udp', 53], ['icmp', undefined]];

/** every source x destination of its family x protocol/port */
export function gridProbes(srcs: Src[]): Array<{ s: Src; dst: string; proto: Proto; port: number | undefined }> {
  return srcs.flatMap((s) => DSTS[s.addr.includes(':') ? 6 : 4].flatMap((dst) => PROBES.map(([proto, port]) => ({ s, dst, proto, port }))));
}
