/** The WASM arena is rewound per operation: repeated work must not grow memory. */
import { describe, expect, it } from 'vitest';
import { AddrSet, Lookup, parseEntries, parseLines } from '../../src/core/index.js';
import { wasm } from '../../src/core/wasm.js';

describe('core memory', () => {
  it('stays bounded over many operations (apply --watch calls the core repeatedly)', () => {
    const text = new TextEncoder().encode(Array.from({ length: 5000 }, (_, i) => `10.${i >> 8}.${i & 255}.0/24\n2001:db8:${i.toString(16)}::/48`).join('\n'));
    const round = () => {
      const { set } = parseLines(text);
      const other = AddrSet.of(['10.0.0.0/9', '2001:db8::/40']);
      set.difference(other).union(other).intersect(set).toCidrs();
      set.reducedCidrs(20);
      new Lookup([{ set, id: 1 }, { set: other, id: 2 }]).find(['10.1.2.3', '2001:db8:1::1']);
      parseEntries(['010.0.0.0', '10.0.0.1/8', '::1']);
    };
    round();
    const after1 = wasm().memory.buffer.byteLength;
    for (let i = 0; i < 100; i++) round();
    expect(wasm().memory.buffer.byteLength).toBe(after1);
  });
});
