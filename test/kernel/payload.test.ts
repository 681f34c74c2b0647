/** The tests' own iptables text reader (no kernel needed). */
import { describe, expect, it } from 'vitest';
import { logRules, parseRules, tokenize } from './payload.js';

const TEXT = `*filter
:CW-X - [0:0]
[3:180] -A CW-X -p tcp -m set --match-set cw-a dst -m tcp --dport 80 -m comment --comment "asg \\"x\\" 0" -m limit --limit 5/min -j LOG --log-prefix "CW-ALLOW x "
[3:180] -A CW-X -p tcp -m set --match-set cw-a dst -m tcp --dport 80 -m comment --comment "asg x 0" -j RETURN
-A CW-X ! -d 10.0.0.0/8 -g CW-DENY
-A CW-DENY -m limit --limit 10/min --limit-burst 3 -j LOG --log-prefix "CW-DENY seg "
-A CW-DENY -p tcp -j REJECT --reject-with tcp-reset
-A CW-DENY -j REJECT --reject-with icmp-port-unreachable
-A CW-DENY -j DROP
COMMIT`;

describe('payload reader', () => {
  it('tokenizes quoted strings with escapes', () => {
    expect(tokenize('-m comment --comment "a \\"b\\" c" -j X')).toEqual(['-m', 'comment', '--comment', 'a "b" c', '-j', 'X']);
  });

  it('splits rules into matches, verdict, limit and counters', () => {
    const r = parseRules(TEXT);
    expect(r).toHaveLength(7);
    expect(r[0]).toMatchObject({
      chain: 'CW-X',
      matches: ['-p tcp', '-m set --match-set cw-a dst', '-m tcp --dport 80'],
      verdict: 'LOG',
      limit: { rate: '5/min', burst: 5 },
      packets: 3,
    });
    expect(r[2]).toMatchObject({ matches: ['! -d 10.0.0.0/8'], verdict: 'goto:CW-DENY', packets: undefined });
    expect(r[3].limit).toEqual({ rate: '10/min', burst: 3 });
  });

  it('reads -I CHAIN [position] like -A', () => {
    const [r] = parseRules('-I FORWARD 1 -m comment --comment "x y" -j CW-TOP');
    expect(r).toMatchObject({ chain: 'FORWARD', matches: [], verdict: 'CW-TOP' });
  });

  it('finds each LOG rule with the rules a logged packet meets next', () => {
    const logs = logRules(TEXT);
    expect(logs.map((l) => l.prefix)).toEqual(['CW-ALLOW x ', 'CW-DENY seg ']);
    expect(logs[0].next?.verdict).toBe('RETURN');
    expect(logs[0].following.map((f) => f.verdict)).toEqual(['RETURN', 'goto:CW-DENY']);
    // stops at the first catch-all
    expect(logs[1].following.map((f) => f.verdict)).toEqual(['REJECT', 'REJECT']);
  });
});
