/**
 * The bad-policy corpus: test/policies/bad/<case>.(yaml|yml|json), one case
 * per file. A YAML case starts with comment lines
 *   # expect: <substring of one diagnostic>
 *   # at: <line>:<col>            (in the case file)  or
 *   # at: <file>:<line>:<col>     (file relative to the case's directory)
 * A JSON case (no comments in JSON) has a sidecar <case>.json.expect holding
 * the same lines without the leading '#'. Files under bad/files/ are inputs
 * referenced by cases, not cases themselves.
 * Each case runs the real loader; when the loader accepts the policy (a
 * compile-level case), the compiler's checkPolicy is consulted.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export const BAD = join(import.meta.dirname, '..', 'policies', 'bad');

export interface Case { file: string; path: string; expect: string; at: { file: string; line: number; col: number } }

export function readCase(file: string): Case {
  const path = join(BAD, file);
  const header = file.endsWith('.json') ? readFileSync(`${path}.expect`, 'utf8') : readFileSync(path, 'utf8');
  const field = (name: string) => {
    const m = new RegExp(`^#?\\s*${name}:\\s*(.*?)\\s*$`, 'm').exec(header);
    if (!m) throw new Error(`${file}: missing "${name}:" header`);
    return m[1];
  };
  const at = field('at');
  const m = /^(?:(.+):)?(\d+):(\d+)$/.exec(at);
  if (!m) throw new Error(`${file}: bad "at:" header ${at}`);
  return { file, path, expect: field('expect'), at: { file: m[1] ? join(BAD, m[1]) : path, line: Number(m[2]), col: Number(m[3]) } };
}

export function caseFiles(): string[] {
  return readdirSync(BAD, { withFileTypes: true })
    .filter((d) => d.isFile() && /\.(ya?ml|json)$/.test(d.name))
    .map((d) => d.name)
    .sort();
}
