/**
 * The nft apply's state model without a kernel: parsing `nft -j list table`
 * output (counters and handles ignored, elements as text), the plan between
 * two states, the lines added around the script, error line numbers.
 */
import { describe, expect, it } from 'vitest';
import {
  createSetLines, diffNft, elemText, formatNftPlan, nftErrorLine, nftStateHash, nftTransactions, parseNftJson, restoreScript, transactionAround, txnText,
} from '../../src/state/nft.js';

const T = { family: 'inet', table: 'cellwall' };
function table(opts: {
  elems?: unknown[]; dyn?: unknown[]; rules?: Array<{ chain: string; expr: unknown[]; handle?: number }>; extraChain?: string; extraSet?: string; counter?: number;
  comment?: string; dynComment?: string; prio?: number;
}): string {
  const items: unknown[] = [
    { metainfo: { version: '1.0.6' } },
    { table: { family: 'inet', name: 'cellwall', handle: 9 } },
    { set: { ...T, name: 'cw4n-aaa', type: 'ipv4_addr', handle: 2, flags: ['interval'], ...(opts.comment ? { comment: opts.comment } : {}), elem: opts.elems ?? [{ prefix: { addr: '10.0.0.0', len: 8 } }] } },
    { set: { ...T, name: 'cw-d-g-r4', type: 'ipv4_addr', handle: 3, flags: ['interval'], ...(opts.dynComment ? { comment: opts.dynComment } : {}), ...(opts.dyn ? { elem: opts.dyn } : {}) } },
    ...(opts.extraSet ? [{ set: { ...T, name: opts.extraSet, type: 'ipv4_addr', handle: 4, flags: ['interval'] } }] : []),
    { chain: { ...T, name: 'forward', handle: 1, type: 'filter', hook: 'forward', prio: opts.prio ?? 0, policy: 'accept' } },
    { chain: { ...T, name: 'CW-X-v4', handle: 5 } },
    ...(opts.extraChain ? [{ chain: { ...T, name: opts.extraChain, handle: 6 } }] : []),
    ...(opts.rules ?? [
      { chain: 'forward', expr: [{ counter: { packets: opts.counter ?? 0, bytes: 0 } }, { jump: { target: 'CW-X-v4' } }] },
      { chain: 'CW-X-v4', expr: [{ match: { op: '==', left: { payload: { protocol: 'ip', field: 'daddr' } }, right: '@cw4n-aaa' } }, { return: null }] },
    ]).map((r, i) => ({ rule: { ...T, handle: r.handle ?? 10 + i, chain: r.chain, expr: r.expr } })),
  ];
  return JSON.stringify({ nftables: items });
}

describe('nft apply state', () => {
  it('elements read as text: prefixes, addresses, ranges, concatenations', () => {
    expect(elemText({ prefix: { addr: '10.0.0.0', len: 8 } })).toBe('10.0.0.0/8');
    expect(elemText('192.0.2.1')).toBe('192.0.2.1');
    expect(elemText({ range: ['192.0.2.1', '192.0.2.9'] })).toBe('192.0.2.1-192.0.2.9');
    expect(elemText({ concat: [{ prefix: { addr: '::', len: 0 } }, 'udp', 53] })).toBe('::/0 . udp . 53');
  });

  it('counters, handles and dynamic members do not count as differences', () => {
    const a = parseNftJson(table({}));
    const b = parseNftJson(table({ counter: 123, dyn: ['10.255.0.7'], rules: undefined }));
    expect(nftStateHash(a)).toBe(nftStateHash(b));
    const p = diffNft(a, b);
    expect(p.empty).toBe(true);
    expect(formatNftPlan(p, a)).toBe('');
    expect(b.sets.get('cw-d-g-r4')!.elems).toEqual(['10.255.0.7']);
  });

  it('a missing table, altered elements, changed rules and leftovers of an older policy are planned', () => {
    const want = parseNftJson(table({}));
    const none = diffNft(want, null);
    expect(none.empty).toBe(false);
    expect(none.table).toBe('create');
    expect(none.chains.create.sort()).toEqual(['CW-X-v4', 'forward']);

    const live = parseNftJson(table({
      elems: [{ prefix: { addr: '10.0.0.0', len: 8 } }, '192.0.2.1'],
      rules: [{ chain: 'CW-X-v4', expr: [{ return: null }] }],
      extraChain: 'CW-OLD-v4', extraSet: 'cw4n-old',
    }));
    const p = diffNft(want, live);
    expect(p.empty).toBe(false);
    expect(p.sets.refill).toEqual([{ name: 'cw4n-aaa', added: [], removed: ['192.0.2.1'] }]);
    expect(p.sets.remove).toEqual(['cw4n-old']);
    expect(p.chains.remove).toEqual(['CW-OLD-v4']);
    expect(p.chains.replace.map((c) => [c.name, c.was, c.rules])).toEqual([['forward', 0, 1], ['CW-X-v4', 1, 1]]);
    const text = formatNftPlan(p, want);
    expect(text).toContain('~ set cw4n-aaa: +0 -1 elements (refilled)');
    expect(text).toContain('- chain CW-OLD-v4 (older policy)');
    const { before, after } = transactionAround(p, live);
    expect(before).toEqual(['flush set inet cellwall cw4n-aaa']);
    expect(after).toEqual(['flush chain inet cellwall CW-OLD-v4', 'delete chain inet cellwall CW-OLD-v4', 'delete set inet cellwall cw4n-old']);
  });

  it('dynamic member sets of an older policy are kept', () => {
    const want = parseNftJson(table({}));
    const live = parseNftJson(table({ extraSet: 'cw-d-old-s4' }));
    const p = diffNft(want, live);
    expect(p.empty).toBe(true);
    expect(transactionAround(p, live).after).toEqual([]);
  });

  it('a set or chain whose declaration differs is redeclared; a new set is staged before any rule refers to it', () => {
    // the same content-addressed set under another segment's comment, a dynamic set of an older version, a base chain at another priority
    const want = parseNftJson(table({ comment: 'app-to-app destinations (y)', dynComment: 'running members of g', extraSet: 'cw4n-new' }));
    const live = parseNftJson(table({ comment: 'app-to-app destinations (x)', dyn: ['10.255.0.7', { prefix: { addr: '10.255.1.0', len: 24 } }], prio: 10, extraChain: 'CW-OLD-v4' }));
    const p = diffNft(want, live);
    expect(p.empty).toBe(false);
    expect(p.sets.create).toEqual(['cw4n-new']);
    expect(p.sets.redeclare).toEqual([{ name: 'cw4n-aaa', fields: ['comment'] }, { name: 'cw-d-g-r4', fields: ['comment'] }]);
    expect(p.chains.redeclare).toEqual([{ name: 'forward', fields: ['prio'] }]);
    const text = formatNftPlan(p, want);
    expect(text).toContain('~ set cw4n-aaa: declaration differs (comment): deleted and recreated in the same transaction');
    expect(text).toContain('~ chain forward: 1 -> 1 rules (+0 -0), declaration differs (prio): deleted and recreated');
    // the chain: every live chain flushed (no jump refers to it), deleted, and the script declares it anew
    const { before, after } = transactionAround(p, live);
    expect(before).toEqual([
      'flush chain inet cellwall forward', 'flush chain inet cellwall CW-X-v4', 'flush chain inet cellwall CW-OLD-v4', 'delete chain inet cellwall forward',
    ]);
    expect(after).toEqual(['flush chain inet cellwall CW-OLD-v4', 'delete chain inet cellwall CW-OLD-v4']);

    const script = 'table inet cellwall {\n  set cw4n-aaa {\n  }\n  chain CW-X-v4 {\n    ip daddr @cw4n-aaa return comment "not cw4n-aaa-x"\n    ip saddr @cw-d-g-r4 drop\n  }\n}\n';
    const txns = nftTransactions(p, want, live, script);
    expect(txns.map((x) => x.step)).toEqual(['stage', 'switch', 'recreate', 'final']);
    // 1. new sets and the staging copies, unreferenced, with their elements (a dynamic set: its live members)
    expect(txns[0].before).toEqual([
      'add set inet cellwall cw4n-new { type ipv4_addr; flags interval; }',
      'add set inet cellwall cw-tmp-cw4n-aaa { type ipv4_addr; flags interval; comment "app-to-app destinations (y)"; }',
      'add element inet cellwall cw-tmp-cw4n-aaa { 10.0.0.0/8 }',
      'add set inet cellwall cw-tmp-cw-d-g-r4 { type ipv4_addr; flags interval; comment "running members of g"; }',
      'add element inet cellwall cw-tmp-cw-d-g-r4 { 10.255.0.7, 10.255.1.0/24 }',
    ]);
    // 2. the rules move to the staging names; the old sets go
    expect(txns[1].script).toBe(script.replace('set cw4n-aaa {', 'set cw-tmp-cw4n-aaa {').replace('@cw4n-aaa return', '@cw-tmp-cw4n-aaa return').replace('@cw-d-g-r4', '@cw-tmp-cw-d-g-r4'));
    expect(txns[1].script).toContain('"not cw4n-aaa-x"'); // only whole names
    expect(txns[1].after.slice(-2)).toEqual(['delete set inet cellwall cw4n-aaa', 'delete set inet cellwall cw-d-g-r4']);
    // 3. the sets under their own names; 4. the script as it is, and the staging sets go
    expect(txns[2].before).toEqual([
      'add set inet cellwall cw4n-aaa { type ipv4_addr; flags interval; comment "app-to-app destinations (y)"; }',
      'add element inet cellwall cw4n-aaa { 10.0.0.0/8 }',
      'add set inet cellwall cw-d-g-r4 { type ipv4_addr; flags interval; comment "running members of g"; }',
      'add element inet cellwall cw-d-g-r4 { 10.255.0.7, 10.255.1.0/24 }',
    ]);
    expect(txns[3].script).toBe(script);
    expect(txns[3].after).toEqual(['delete set inet cellwall cw-tmp-cw4n-aaa', 'delete set inet cellwall cw-tmp-cw-d-g-r4']);
    expect(txnText(txns[3])).toBe(`${script}\ndelete set inet cellwall cw-tmp-cw4n-aaa\ndelete set inet cellwall cw-tmp-cw-d-g-r4\n`);
  });

  it('without a live table the script alone; with one but nothing new, the switch alone', () => {
    const want = parseNftJson(table({}));
    expect(nftTransactions(diffNft(want, null), want, null, 'S').map((x) => [x.step, x.before.length, x.script, x.after.length])).toEqual([['switch', 0, 'S', 0]]);
    const live = parseNftJson(table({ elems: ['192.0.2.1'] }));
    const p = diffNft(want, live);
    const txns = nftTransactions(p, want, live, 'S');
    expect(txns.map((x) => x.step)).toEqual(['switch']);
    expect(txns[0].before).toEqual(['flush set inet cellwall cw4n-aaa']);
  });

  it('a concatenated set is recreated with its type and elements as nft prints them', () => {
    const s = parseNftJson(JSON.stringify({ nftables: [{ set: { ...T, name: 'cw4p-x', type: ['ipv4_addr', 'inet_proto', 'inet_service'], handle: 3, flags: ['interval'], comment: 'asg "ports"',
      elem: [{ concat: [{ prefix: { addr: '10.0.0.0', len: 8 } }, 'tcp', 5432] }, { concat: [{ range: ['192.0.2.1', '192.0.2.9'] }, 'udp', 53] }] } }] })).sets.get('cw4p-x')!;
    expect(createSetLines('cw4p-x', s, s.elems)).toEqual([
      'add set inet cellwall cw4p-x { type ipv4_addr . inet_proto . inet_service; flags interval; comment "asg \'ports\'"; }',
      'add element inet cellwall cw4p-x { 10.0.0.0/8 . tcp . 5432, 192.0.2.1-192.0.2.9 . udp . 53 }',
    ]);
  });

  it('error lines and the rollback script', () => {
    expect(nftErrorLine('/dev/stdin:42:7-9: Error: syntax error\n  x\n')).toBe(42);
    expect(nftErrorLine('Error: Could not process rule: No such file or directory')).toBeNull();
    expect(restoreScript(null)).toBe('table inet cellwall {}\ndelete table inet cellwall\n');
    expect(restoreScript('table inet cellwall {\n}\n')).toMatch(/^table inet cellwall \{\}\ndelete table inet cellwall\ntable inet cellwall \{\n\}\n$/);
  });
});
