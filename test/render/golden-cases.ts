/** Small policies whose payloads are pinned as golden files under test/golden/<case>/. */
import type { Policy } from '../../src/policy/model.js';
import { makePolicy } from '../compile/fixtures.js';

export interface GoldenCase { name: string; policy: Policy; segment: string }

export function goldenCases(): GoldenCase[] {
  return [
    {
      // the SPEC §1 shape: restricted segment, tighten, global + space-bound ASGs, app-to-app rules
      name: 'restricted-tighten',
      segment: 'iso-1',
      policy: makePolicy({
        file: '/policies/restricted.yaml',
        mode: 'tighten',
        asgs: {
          public_networks: [{ protocol: 'all', destination: ['0.0.0.0-9.255.255.255', '11.0.0.0-169.253.255.255', '169.255.0.0-172.15.255.255', '172.32.0.0-192.167.255.255', '192.169.0.0-255.255.255.255'] }],
          dns: [
            { protocol: 'tcp', destination: ['0.0.0.0/0', '::/0'], ports: [{ from: 53, to: 53 }] },
            { protocol: 'udp', destination: ['0.0.0.0/0', '::/0'], ports: [{ from: 53, to: 53 }] },
          ],
          brokered: [{ protocol: 'tcp', destination: ['10.0.0.0/8', 'fd00:10::/64'], ports: [{ from: 443, to: 443 }, { from: 3306, to: 3306 }, { from: 5432, to: 5432 }, { from: 6379, to: 6379 }], log: true, description: 'brokered services' }],
        },
        groups: { hr: ['192.168.0.0/16'], it: ['10.150.0.0/16'], 'space-sandbox': 'dynamic' },
        segments: { 'iso-1': { containerNetwork: ['10.255.0.0/16', 'fd00:255::/64'], egress: 'restricted', egressAllow: ['10.0.0.0/8', 'fd00:10::/64'] } },
        bindings: [
          { asgs: ['public_networks', 'dns'], phases: ['running', 'staging'] },
          { asgs: ['brokered'], groups: ['space-sandbox'], phases: ['running'] },
        ],
        policies: {
          default: 'deny',
          rules: [
            { from: 'hr', to: 'it', protocol: 'tcp', ports: [{ from: 80, to: 80 }] },
            { from: 'it', to: 'it' },
            { from: 'space-sandbox', to: 'it', protocol: 'tcp', ports: [{ from: 8080, to: 8089 }] },
          ],
        },
      }),
    },
    {
      // enforce mode, drop, logging, ICMP, large port ranges (multiport) and long port lists
      name: 'enforce-drop-log',
      segment: 'shared',
      policy: makePolicy({
        file: '/policies/enforce.yaml',
        mode: 'enforce',
        defaults: { deny: 'drop', logDenied: true, established: 'accept' },
        asgs: {
          ping: [
            { protocol: 'icmp', destination: ['0.0.0.0/0'], icmpType: 8, icmpCode: 0 },
            { protocol: 'icmpv6', destination: ['2001:db8::/32'], icmpType: -1 },
          ],
          ephemeral: [{ protocol: 'tcp', destination: ['198.51.100.0/24', '203.0.113.0/24'], ports: [{ from: 1024, to: 65535 }], log: true }],
          many: [{ protocol: 'udp', destination: ['192.0.2.0/24'], ports: Array.from({ length: 20 }, (_, i) => ({ from: 7000 + 2 * i, to: 7000 + 2 * i })) }],
          web: [
            { protocol: 'tcp', destination: ['203.0.113.0/25'], ports: [{ from: 80, to: 80 }, { from: 443, to: 443 }] },
            { protocol: 'tcp', destination: ['203.0.113.128/25'], ports: [{ from: 443, to: 443 }] },
          ],
        },
        groups: {},
        segments: { shared: { containerNetwork: ['10.255.0.0/16', 'fd00:255::/64'], egress: 'open' } },
        bindings: [{ asgs: ['ping', 'ephemeral', 'many', 'web'] }],
        policies: { default: 'allow', rules: [] },
      }),
    },
    {
      // closed segment with dynamic groups: running apps reach only app-to-app space
      name: 'closed-dynamic',
      segment: 'vault',
      policy: makePolicy({
        file: '/policies/closed.yaml',
        mode: 'tighten',
        defaults: { deny: 'reject', logDenied: false, established: 'none' },
        asgs: { all: [{ protocol: 'all', destination: ['0.0.0.0/0', '::/0'] }] },
        groups: { 'Space.A': 'dynamic', 'space-b': 'dynamic' },
        segments: { vault: { containerNetwork: ['10.254.0.0/16', 'fd00:254::/64'], egress: 'closed' } },
        bindings: [{ asgs: ['all'], phases: ['staging'] }],
        policies: { default: 'deny', rules: [{ from: 'Space.A', to: 'space-b', protocol: 'tcp', ports: [{ from: 8080, to: 8080 }] }] },
      }),
    },
  ];
}
