/**
 * The compile pipeline in one thread, for instruction counts (bench/instructions.ts):
 *
 *   node pipeline.js DIST_SRC POLICY SEGMENT
 *
 * Loads the policy, compiles the segment, renders both iptables payloads,
 * packs the sets for the ipset renderer and renders the manifest, with the
 * modules of DIST_SRC (the `dist/src` of any build, so an older commit built
 * in a worktree can be measured by this tree's tool). Prints the bytes
 * rendered, which the caller compares between builds.
 */
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const [dist, policyFile, segment] = process.argv.slice(2);
const mod = (p: string) => import(pathToFileURL(join(dist, p)).href);
const { loadPolicy } = await mod('policy/index.js');
const { compileSegment } = await mod('compile/index.js');
const { renderIptables } = await mod('render/iptables.js');
const { renderManifest } = await mod('render/manifest.js');
const { ipsetInput } = await mod('render/ipset.js');
const policy = await loadPolicy(policyFile);
const { plan } = compileSegment(policy, segment);
const v4 = Buffer.from(renderIptables(plan, 4));
const v6 = Buffer.from(renderIptables(plan, 6));
ipsetInput(plan);
const manifest = Buffer.from(renderManifest(plan, { 'iptables.v4': v4, 'iptables.v6': v6 }, {}));
console.log(JSON.stringify({ bytes: v4.length + v6.length + manifest.length }));
