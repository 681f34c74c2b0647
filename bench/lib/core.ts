/**
 * Loads the cellwall address core (dist/src/core) lazily, so that the peer side
 * of the benchmarks still runs when the core is missing or broken.
 */
export type Core = typeof import('../../src/core/index.js');

export async function loadCore(): Promise<{ core: Core | null; error: string | null }> {
  try {
    const core: Core = await import('../../src/core/index.js');
    const probe = core.AddrSet.of(['10.0.0.0/9', '10.128.0.0/9']).toCidrs(4);
    if (probe.length !== 1 || probe[0] !== '10.0.0.0/8') {
      return { core: null, error: `core self-check failed: got ${JSON.stringify(probe)}` };
    }
    return { core, error: null };
  } catch (e) {
    return { core: null, error: `core unavailable: ${(e as Error).message}` };
  }
}
