// cidr-matcher ships no types; only what the benchmarks use.
declare module 'cidr-matcher' {
  export default class Matcher {
    constructor(cidrs?: string[]);
    addNetworkClass(cidr: string): void;
    contains(address: string): boolean;
  }
}
