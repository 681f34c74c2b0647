/**
 * Textual diff of payloads: the changed lines, unified style with no context
 * (like `diff -U0`). Comment lines (`# ...`) are left out: they carry the
 * policy hash and would always differ.
 */

export interface TextHunk { oldStart: number; oldLines: string[]; newStart: number; newLines: string[] }

/** Above this many cells the middle part is compared as multisets of lines (order ignored) instead of by LCS. */
const LCS_LIMIT = 4_000_000;

export function diffLines(a: string[], b: string[]): TextHunk[] {
  let pre = 0;
  while (pre < a.length && pre < b.length && a[pre] === b[pre]) pre++;
  let suf = 0;
  while (suf < a.length - pre && suf < b.length - pre && a[a.length - 1 - suf] === b[b.length - 1 - suf]) suf++;
  const A = a.slice(pre, a.length - suf);
  const B = b.slice(pre, b.length - suf);
  if (!A.length && !B.length) return [];
  // edit script: 'k' keep, 'd' delete from A, 'i' insert from B
  const ops: string[] = [];
  if (A.length * B.length <= LCS_LIMIT) {
    const n = A.length;
    const m = B.length;
    const L = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
    for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--) L[i][j] = A[i] === B[j] ? L[i + 1][j + 1] + 1 : Math.max(L[i + 1][j], L[i][j + 1]);
    let i = 0;
    let j = 0;
    while (i < n || j < m) {
      if (i < n && j < m && A[i] === B[j]) { ops.push('k'); i++; j++; } else if (j < m && (i === n || L[i][j + 1] >= L[i + 1][j])) { ops.push('i'); j++; } else { ops.push('d'); i++; }
    }
  } else {
    const inB = new Map<string, number>();
    for (const l of B) inB.set(l, (inB.get(l) ?? 0) + 1);
    const inA = new Map<string, number>();
    for (const l of A) inA.set(l, (inA.get(l) ?? 0) + 1);
    const keptA = A.map((l) => { const c = inB.get(l) ?? 0; if (c > 0) { inB.set(l, c - 1); return true; } return false; });
    const keptB = B.map((l) => { const c = inA.get(l) ?? 0; if (c > 0) { inA.set(l, c - 1); return true; } return false; });
    // runs of removed lines (old numbering) and runs of added lines (new numbering)
    const runs = (kept: boolean[], lines: string[], removed: boolean): TextHunk[] => {
      const hs: TextHunk[] = [];
      let h: TextHunk | null = null;
      kept.forEach((k, x) => {
        if (k) { h = null; return; }
        if (!h) { h = { oldStart: removed ? pre + x + 1 : 0, oldLines: [], newStart: removed ? 0 : pre + x + 1, newLines: [] }; hs.push(h); }
        (removed ? h.oldLines : h.newLines).push(lines[x]);
      });
      return hs;
    };
    return [...runs(keptA, A, true), ...runs(keptB, B, false)];
  }
  const hunks: TextHunk[] = [];
  let i = 0;
  let j = 0;
  let cur: TextHunk | null = null;
  for (const op of ops) {
    if (op === 'k') { cur = null; i++; j++; continue; }
    if (!cur) { cur = { oldStart: pre + i + 1, oldLines: [], newStart: pre + j + 1, newLines: [] }; hunks.push(cur); }
    if (op === 'd') cur.oldLines.push(A[i++]);
    else cur.newLines.push(B[j++]);
  }
  return hunks;
}

export function payloadLines(text: string): string[] {
  return text.split('\n').filter((l) => l.trim() !== '' && !l.startsWith('#'));
}

export function formatHunks(name: string, oldLabel: string, newLabel: string, hunks: TextHunk[]): string {
  if (!hunks.length) return '';
  const out = [`--- ${oldLabel}/${name}`, `+++ ${newLabel}/${name}`];
  for (const h of hunks) {
    out.push(`@@ -${h.oldStart},${h.oldLines.length} +${h.newStart},${h.newLines.length} @@`);
    for (const l of h.oldLines) out.push(`-${l}`);
    for (const l of h.newLines) out.push(`+${l}`);
  }
  return out.join('\n') + '\n';
}
