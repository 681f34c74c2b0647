/**
 * The stream sent to a cell's `sh -s` over ssh stdin.
 *
 * The remote command line is a constant (remoteCommand); all data travels on
 * stdin. The stream is one POSIX sh brace group: the shell parses the whole
 * group before running any of it, so a stream cut short (connection killed
 * mid-transfer) is a syntax error and changes nothing. Bundle files are
 * embedded as here-documents with a quoted, random delimiter, so their
 * content (rule comments carry policy descriptions) is never expanded.
 *
 * On the cell the script needs only sh, awk, sort, mktemp, iptables/ip6tables
 * (-save/-restore) and ipset; flock and sha256sum are used when present
 * (mkdir lock and cksum otherwise). It performs the same sequence as
 * `cellwall apply`:
 *   lock (flock on $CELLWALL_STATE_DIR/apply.lock, default /run/cellwall, the
 *   same lock as `cellwall apply`); if the recorded (bundle hash, live CW- hash) pair matches the bundle
 *   and the live state: "unchanged", no writes;
 *   snapshot (iptables-save -t filter per family, ipset save of cw- sets);
 *   ipset restore of the bundle's sets that do not exist yet (names are
 *   content-addressed; cw-d-* dynamic member sets are created only if missing);
 *   one `iptables-restore -w --noflush` per family replacing the CW- chains,
 *   adding the FORWARD jump only if missing, removing stale CW- chains;
 *   verify (every CW- chain of the bundle has the bundle's rule count, the
 *   jumps exist); on any failure restore the CW- part of the snapshot and
 *   destroy the sets this run created;
 *   destroy unreferenced cw- sets (never cw-d-*); record the hashes.
 * When the cellwall BOSH job is installed (/var/vcap/jobs/cellwall/bin/cellwall)
 * the bundle is handed to it instead (`cellwall apply --payload DIR`).
 */
import { randomBytes } from 'node:crypto';
import { BACKEND_FILES, type Bundle } from './bundle.js';

/**
 * Constant remote command: become root and run the bootstrap (BOOT, constant
 * text). The bootstrap reads one word per line from stdin with the shell's
 * `read` (byte by byte, so nothing after the line is consumed):
 *   `probe`  print the fast-path probe (record + cheap fingerprint), then read the next word;
 *   `gz`     the rest of stdin is the gzipped apply/plan stream: `gzip -dc | sh -s`;
 *   `raw`    the rest of stdin is the stream as is: `sh -s`;
 *   end of input (or anything else): exit, nothing done.
 * So one ssh session per cell does probe, transfer and apply: the operator
 * reads the probe line, then either ends stdin or sends the stream.
 */
export function remoteCommand(): string {
  return `cw_boot=${shq(BOOT)}; if [ "$(id -u)" -eq 0 ]; then exec sh -c "$cw_boot"; else exec sudo -n sh -c "$cw_boot"; fi`;
}

/** The words the operator writes to the bootstrap, one per line (`probe` takes the backend as an argument). */
export const GO = { probe: 'probe', gz: 'gz', raw: 'raw' } as const;

/** single-quote for sh */
export function shq(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

function heredoc(path: string, content: string): string {
  let delim: string;
  const lines = new Set(content.split('\n'));
  do delim = `CW_EOF_${randomBytes(8).toString('hex')}`; while (lines.has(delim));
  const body = content.length === 0 || content.endsWith('\n') ? content : content + '\n';
  return `cat > "$d/${path}" <<'${delim}'\n${body}${delim}\n`;
}

export type ScriptMode = 'apply' | 'plan';

/** Marker lines the script prints on stdout. */
export const RESULT = 'CW-RESULT';
export const SECTION = 'CW-SECTION';
export const PHASE = 'CW-PHASE';
/** `CW-PROBE <recorded bundle hash|none> <recorded fingerprint|none> <live fingerprint>` */
export const PROBE = 'CW-PROBE';
/** `CW-CPU <shell user> <shell sys> <children user> <children sys>` (sh \`times\`) */
export const CPU = 'CW-CPU';

/**
 * nft: where ruleset.nft holds each set's full block, one line per set: `NAME 1` (a dynamic member
 * set: declared without elements in the first `table inet cellwall {` block) or `NAME 2` (its block
 * with the elements, in the second one: "3. fill the sets"). Computed here, on the operator's side,
 * so that the remote sh only picks the blocks of the sets a cell lacks (cw_nft_blocks) to stage them
 * in a transaction of their own before the rules that use them (docs/nft.md).
 */
export function nftSetIndex(script: string): string {
  const at = new Map<string, number>();
  let table = 0;
  for (const m of script.matchAll(/^(?:table inet cellwall \{|  set (\S+) \{)$/gm)) {
    if (m[1] === undefined) { table++; continue; }
    if (!/^[A-Za-z0-9_-]+$/.test(m[1])) throw new Error(`ruleset.nft: set name ${JSON.stringify(m[1])} is not a plain identifier`);
    if (table === 1 || table === 2) at.set(m[1], table);
  }
  return [...at].map(([n, t]) => `${n} ${t}\n`).join('');
}

export function buildScript(mode: ScriptMode, bundle: Bundle): string {
  const backend = bundle.backend ?? 'iptables';
  let files = mode === 'apply' ? BACKEND_FILES[backend].map((f) => heredoc(f, bundle.files[f] ?? '')).join('') : '';
  if (mode === 'apply' && backend === 'nft') files += heredoc('sets.idx', nftSetIndex(bundle.files['ruleset.nft'] ?? ''));
  return `{
cw_mode=${shq(mode)}
cw_backend=${shq(backend)}
cw_bundle=${shq(bundle.hash)}
${LIB[backend]}
cw_setup
${files}cw_main
}
`;
}

// The library is constant text: no value from a policy or an inventory is
// ever spliced into it. COMMON is what the bootstrap needs (the probe) and is
// also the head of every stream (a fresh `sh -s` needs its functions); APPLY the rest.
const COMMON = String.raw`
set -u
umask 077
PATH="$PATH:/usr/sbin:/sbin:/usr/local/sbin"
export PATH LC_ALL=C
cw_job=/var/vcap/jobs/cellwall/bin/cellwall
cw_state=${'$'}{CELLWALL_STATE_DIR:-/run/cellwall}
d=
# cellwall's sets (src/state/ipset.ts isCwSet): cw-..., and the compiler's cw4n-, cw6p-, cw4l-...;
# dynamic member sets cw-d-* are never compared, replaced or destroyed
cw_setre='^cw(-|[46][a-z]*-)'

cw_hash() {
  if command -v sha256sum >/dev/null 2>&1; then sha256sum | cut -d' ' -f1; else cksum | tr ' ' '-'; fi
}
cw_have6() { command -v ip6tables-restore >/dev/null 2>&1 && [ -e /proc/net/if_inet6 ]; }

# CW- part of the filter table as iptables-save prints it: chain names
# (without policy/counters), CW- rules, FORWARD jumps into CW- chains.
cw_cwfilter() {
  awk '
    /^:CW-/ { print $1; next }
    /^-A CW-/ { print; next }
    /^-A FORWARD / && / -j CW-/ { print; next }'
}
cw_cwpart() { "$1-save" -t filter 2>/dev/null | cw_cwfilter; }
cw_chains() {
  echo v4; cw_cwpart iptables
  echo v6; if cw_have6; then cw_cwpart ip6tables; fi
}
# per cellwall set (not cw-d-*): name, type and entry count (ipset list -t: headers only)
cw_setcounts() {
  ipset list -t 2>/dev/null | awk -v re="$cw_setre" '
    /^Name: / { n = $2; next }
    /^Type: / { t = $2; next }
    /^Number of entries: / { if (n ~ re && n !~ /^cw-d-/) print n, t, $4 }' | sort
}
# cheap fingerprint: the CW- chains part and the cellwall sets' counts
cw_quick() { { cw_chains; echo sets; cw_setcounts; } | cw_hash; }
# nft: the table inet cellwall block of an \`nft list ruleset\` (stdin)
cw_nfttable() { awk '/^table inet cellwall \{$/ { p = 1 } p { print } p && /^\}$/ { p = 0 }'; }
# cheap nft fingerprint: the table without set elements (-t) and without counter values.
# \`nft -t list ruleset\` takes milliseconds where \`nft -t list table\` takes seconds at 100k elements (nft 1.0.6)
cw_nftquick() { nft -t list ruleset 2>/dev/null | cw_nfttable | sed -e 's/counter packets [0-9]* bytes [0-9]*/counter/' | cw_hash; }
# CPU seconds of this shell and its children; \`times\` must run in this shell (not a subshell): two lines follow the marker
cw_cpu() { printf '%s ' CW-CPU; times; }

cw_recorded() {
  cw_rec_bundle= cw_rec_live= cw_rec_quick=
  if [ -r "$cw_state/fleet-applied" ]; then
    { read -r cw_rec_bundle; read -r cw_rec_live; read -r cw_rec_quick; } < "$cw_state/fleet-applied" || true
  fi
}
cw_probe() { # $1 = iptables | nft
  cw_recorded
  if [ "$1" = nft ]; then cw_q=$(cw_nftquick); else cw_q=$(cw_quick); fi
  printf '%s %s %s %s\n' CW-PROBE "${'$'}{cw_rec_bundle:-none}" "${'$'}{cw_rec_quick:-none}" "$cw_q"
}
`;

/** Without comment lines and indentation: the bootstrap travels in the command line of every session. */
function compact(sh: string): string {
  return sh.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#')).join('\n');
}

/** The bootstrap of the remote command (see remoteCommand). */
const BOOT = `${compact(COMMON)}
while read -r cw_go cw_arg; do
  case "$cw_go" in
    probe) cw_probe "${'$'}{cw_arg:-iptables}"; cw_cpu ;;
    gz) gzip -dc | sh -s; exit ;;
    raw) exec sh -s ;;
    *) exit 0 ;;
  esac
done
`;

const APPLY = String.raw`
cw_result() { printf '%s %s\n' CW-RESULT "$*"; }
cw_phase() { printf '%s %s\n' CW-PHASE "$*"; }
cw_sets() {
  ipset save 2>/dev/null | awk -v re="$cw_setre" '($1 == "create" || $1 == "add") && $2 ~ re && $2 !~ /^cw-d-/' | sort
}
# the bundle's static sets that exist on the cell, as ipset save prints them
# (only those: an older policy's sets are never dumped)
cw_bundle_sets_live() { # $1 = bundle ipset.restore, $2 = live set names
  awk -v names="$2" -v re="$cw_setre" 'BEGIN { while ((getline l < names) > 0) have[l] = 1 }
    $1 == "create" && $2 ~ re && $2 !~ /^cw-d-/ && ($2 in have) { print $2 }' "$1" |
  while read -r s; do ipset save "$s" 2>/dev/null; done
}
# static cellwall sets the bundle has but the cell lacks, or the cell has but the bundle lacks
cw_setdiff() { # $1 = bundle ipset.restore, $2 = live set names
  awk -v names="$2" -v re="$cw_setre" '
    BEGIN { while ((getline l < names) > 0) if (l ~ re && l !~ /^cw-d-/) live[l] = 1 }
    $1 == "create" && $2 ~ re && $2 !~ /^cw-d-/ { want[$2] = 1 }
    END { for (s in want) if (!(s in live)) print "missing " s; for (s in live) if (!(s in want)) print "extra " s }' "$1"
}
# the CW- chains part (as cw_chains prints it) from the files $1.iptables and $1.ip6tables
cw_chains_of() { echo v4; cat "$1.iptables"; echo v6; cat "$1.ip6tables"; }
# record: bundle hash, "c:" + hash of the CW- chains part, cheap live fingerprint (cw_quick),
# from the CW- part read into $1.iptables / $1.ip6tables (no second read).
# Set contents are not recorded: the full comparison checks them against the bundle.
cw_record() { # $1 = file prefix
  { printf '%s\n' "$cw_bundle" "c:$(cw_chains_of "$1" | cw_hash)"; { cw_chains_of "$1"; echo sets; cw_setcounts; } | cw_hash; } \
    > "$cw_state/fleet-applied.new" && mv "$cw_state/fleet-applied.new" "$cw_state/fleet-applied"
}
# the CW- part of both families into $1.iptables / $1.ip6tables (empty when the cell has no IPv6);
# fails when iptables-save fails
cw_read_cw() { # $1 = file prefix
  iptables-save -t filter > "$1.full" 2>>"$d/err" || return 1
  cw_cwfilter < "$1.full" > "$1.iptables"
  : > "$1.ip6tables"
  if cw_have6; then ip6tables-save -t filter > "$1.full" 2>>"$d/err" || return 1; cw_cwfilter < "$1.full" > "$1.ip6tables"; fi
  rm -f "$1.full"
}

cw_main() {
  case "$cw_backend/$cw_mode" in
    iptables/apply) cw_apply ;;
    iptables/plan) cw_plan ;;
    nft/apply) cw_nft_apply ;;
    nft/plan) cw_nft_plan ;;
  esac
  cw_cpu
}

cw_setup() {
  trap '' HUP PIPE
  if [ "$cw_mode" = apply ] || [ "$cw_backend" = nft ]; then
    d=$(mktemp -d "${'$'}{TMPDIR:-/tmp}/cellwall.XXXXXX") || { cw_result failed cannot create a temporary directory; exit 1; }
    trap 'rm -rf "$d"' EXIT
  fi
}

cw_lock() {
  mkdir -p "$cw_state" || return 1
  if command -v flock >/dev/null 2>&1; then
    exec 9>>"$cw_state/apply.lock" && flock -x -w 60 9
  else
    i=0
    while ! mkdir "$cw_state/lock.d" 2>/dev/null; do
      i=$((i + 1)); [ "$i" -gt 60 ] && return 1; sleep 1
    done
    cw_unlock_dir=1
  fi
}
cw_unlock() { if [ -n "${'$'}{cw_unlock_dir:-}" ]; then rmdir "$cw_state/lock.d" 2>/dev/null; fi; }

# payload for one family: drop FORWARD jumps that already exist, flush and
# delete live CW- chains the bundle no longer declares (with their FORWARD jumps).
cw_payload() { # $1 = iptables|ip6tables, $2 = bundle file, $3 = live CW- part
  awk -v live="$3" '
    BEGIN {
      while ((getline l < live) > 0) {
        if (l ~ /^:CW-/) livechain[substr(l, 2)] = 1
        else if (l ~ /^-A FORWARD /) livejump[l] = 1
      }
    }
    /^:CW-/ { split($1, a, ":"); declared[a[2]] = 1 }
    /^-[AI] FORWARD / {
      n = split($0, w, " "); tgt = ""
      for (i = 1; i < n; i++) if (w[i] == "-j") tgt = w[i + 1]
      for (j in livejump) { m = split(j, v, " "); if (v[m] == tgt) next }
    }
    { lines[++nl] = $0 }
    END {
      last = 0
      for (i = 1; i <= nl; i++) if (lines[i] == "COMMIT") last = i
      for (i = 1; i <= nl; i++) {
        if (i == last) {
          for (j in livejump) {
            m = split(j, v, " ")
            if ((v[m] in livechain) && !(v[m] in declared)) { sub(/^-A /, "-D ", j); print j }
          }
          for (c in livechain) if (!(c in declared)) stale[c] = 1
          for (c in stale) print "-F " c
          for (c in stale) print "-X " c
        }
        print lines[i]
      }
    }' "$2"
}

# "set entry" per add line, in kernel form (a host entry without /32 or /128, also before
# ",proto:port"), sorted: the two sides of the full comparison (grep, cut, sed, sort: at 127k
# entries ~0.1 s each, where an awk hash of every entry took ~1.5 s and sed with back-references ~1.2 s)
cw_entries() {
  grep '^add ' | cut -d' ' -f2,3 | sed -e 's#/32$##' -e 's#/128$##' -e 's#/32,#,#' -e 's#/128,#,#' | sort -u
}
# restore lines rebuilding each existing, non-dynamic set of the bundle whose live
# entries differ from the bundle's: create cw-x-N like it, add the entries, swap, destroy
cw_drifted() { # $1 = bundle ipset.restore, $2 = ipset save lines of the bundle's existing sets, $3 = live set names
  awk -v names="$3" -v re="$cw_setre" 'BEGIN { while ((getline l < names) > 0) have[l] = 1 }
    $1 == "create" && ($2 in have) && $2 ~ re && $2 !~ /^cw-d-/ { print $2 }' "$1" > "$d/sets.chk"
  [ -s "$d/sets.chk" ] || return 0
  cw_entries < "$1" > "$d/want.e"
  cw_entries < "$2" > "$d/live.e"
  # sets with an entry on one side only (the bundle's sets that do not exist yet are not checked)
  comm -3 "$d/want.e" "$d/live.e" | awk -v chk="$d/sets.chk" 'BEGIN { while ((getline l < chk) > 0) c[l] = 1 }
    ($1 in c) && !($1 in seen) { seen[$1] = 1; print $1 }' > "$d/sets.bad"
  [ -s "$d/sets.bad" ] || return 0
  awk -v bad="$d/sets.bad" -v names="$3" '
    BEGIN { while ((getline l < bad) > 0) b[l] = ++n; while ((getline l < names) > 0) have[l] = 1 }
    ($1 == "create" || $1 == "add") && ($2 in b) {
      t = "cw-x-" b[$2]; l = $0; sub(/^[a-z]+ [^ ]+/, $1 " " t, l)
      if ($1 == "create" && (t in have)) print "destroy " t
      print l
    }
    END { for (s in b) printf "swap cw-x-%d %s\ndestroy cw-x-%d\n", b[s], s, b[s] }' "$1"
}

# restore the CW- part of a snapshot: chains as they were, chains added since removed
cw_rollback_payload() { # $1 = snapshot CW- part, $2 = current CW- part
  awk -v cur="$2" '
    BEGIN { while ((getline l < cur) > 0) {
      if (l ~ /^:CW-/) curchain[substr(l, 2)] = 1
      else if (l ~ /^-A FORWARD /) curjump[l] = 1 } }
    /^:CW-/ { snapchain[substr($1, 2)] = 1; next }
    /^-A FORWARD / { snapjump[$0] = 1; next }
    /^-A CW-/ { rules[++nr] = $0 }
    END {
      print "*filter"
      for (c in snapchain) print ":" c " - [0:0]"
      for (c in curchain) if (!(c in snapchain)) print ":" c " - [0:0]"
      for (j in curjump) if (!(j in snapjump)) { x = j; sub(/^-A /, "-D ", x); print x }
      for (j in snapjump) if (!(j in curjump)) { x = j; sub(/^-A FORWARD /, "-I FORWARD 1 ", x); print x }
      for (i = 1; i <= nr; i++) print rules[i]
      for (c in curchain) if (!(c in snapchain)) print "-X " c
      print "COMMIT"
    }' "$1"
}

# every CW- chain the bundle declares exists with the bundle's rule count; every jump exists
cw_verify() { # $1 = bundle file, $2 = live CW- part
  awk -v live="$2" '
    BEGIN { while ((getline l < live) > 0) {
      if (l ~ /^:CW-/) have[substr(l, 2)] = 1
      else if (l ~ /^-A CW-/) { split(l, w, " "); got[w[2]]++ }
      else if (l ~ /^-A FORWARD /) { n = split(l, w, " "); for (i = 1; i < n; i++) if (w[i] == "-j") jump[w[i + 1]] = 1 } } }
    /^:CW-/ { c = substr($1, 2); want[c] += 0; next }
    /^-A CW-/ { want[$2]++; next }
    /^-[AI] FORWARD / { n = split($0, w, " "); for (i = 1; i < n; i++) if (w[i] == "-j" && !(w[i + 1] in jump)) { print "missing FORWARD jump to " w[i + 1]; bad = 1 } }
    END {
      for (c in want) {
        if (!(c in have)) { print "missing chain " c; bad = 1 }
        else if (got[c] + 0 != want[c]) { print "chain " c " has " got[c] + 0 " rules, expected " want[c]; bad = 1 }
      }
      exit bad
    }' "$1"
}

cw_rollback() { # $1 = reason
  cw_phase rolling back
  for f in iptables ip6tables; do
    [ -f "$d/snap.$f" ] || continue
    if [ "$f" = ip6tables ] && ! cw_have6; then continue; fi
    cw_cwpart "$f" > "$d/cur.$f"
    cw_rollback_payload "$d/snap.$f" "$d/cur.$f" > "$d/rb.$f"
    "$f-restore" -w --noflush < "$d/rb.$f" 2>>"$d/err" || cw_rb_failed=1
  done
  # sets created by this run go (dynamic cw-d-* ones too: they are new and empty);
  # cw- sets of the snapshot that vanished come back
  ipset list -n 2>/dev/null | while read -r s; do
    case "$s" in cw-*|cw[46]*-*) grep -qxF -- "$s" "$d/sets.before" || ipset destroy "$s" 2>/dev/null ;; esac
  done
  ipset list -n 2>/dev/null > "$d/sets.after"
  awk -v after="$d/sets.after" 'BEGIN { while ((getline l < after) > 0) have[l] = 1 }
    !($2 in have)' "$d/snap.sets" > "$d/sets.back"
  [ -s "$d/sets.back" ] && { ipset restore < "$d/sets.back" 2>>"$d/err" || cw_rb_failed=1; }
  if [ -n "${'$'}{cw_rb_failed:-}" ]; then cw_result failed "$1; ROLLBACK FAILED: $(tail -n 3 "$d/err" | tr '\n' ' ')"
  else cw_result rolled-back "$1"; fi
  cw_unlock
  exit 1
}

cw_err() { tail -n 3 "$d/err" 2>/dev/null | tr '\n' ' '; }

cw_apply() {
  : > "$d/err"
  if [ -x "$cw_job" ]; then
    cw_phase applying with "$cw_job"
    if "$cw_job" apply --payload "$d" > "$d/job.out" 2>&1 < /dev/null; then cw_result changed applied by the cellwall job
    else cw_result failed "cellwall job: $(tail -n 3 "$d/job.out" | tr '\n' ' ')"; fi
    return
  fi
  cw_lock || { cw_result failed cannot take the lock in "$cw_state"; exit 1; }
  # full comparison: recorded bundle and chains, and every set of the bundle as the bundle says.
  # The CW- part read here is also the snapshot and the base of the payload (iptables is read
  # twice per family in all: now and after the restore)
  cw_read_cw "$d/snap" || { cw_result failed "iptables-save: $(cw_err)"; cw_unlock; exit 1; }
  cw_now="c:$(cw_chains_of "$d/snap" | cw_hash)"
  ipset list -n > "$d/sets.before" 2>>"$d/err" || { cw_result failed "ipset: $(cw_err)"; cw_unlock; exit 1; }
  cw_bundle_sets_live "$d/ipset.restore" "$d/sets.before" > "$d/live.sets"
  cw_drifted "$d/ipset.restore" "$d/live.sets" "$d/sets.before" > "$d/sets.drifted"
  cw_setdiff "$d/ipset.restore" "$d/sets.before" > "$d/sets.diff"
  cw_recorded
  if [ "$cw_rec_bundle" = "$cw_bundle" ] && [ "$cw_rec_live" = "$cw_now" ] && [ ! -s "$d/sets.drifted" ] && [ ! -s "$d/sets.diff" ]; then
    # a record from before the fingerprint existed gains it (no firewall write)
    if [ -z "$cw_rec_quick" ]; then cw_record "$d/snap"; fi
    cw_result unchanged; cw_unlock; return
  fi
  cw_phase applying
  # the snapshot of the chains is $d/snap.*; the only existing sets this run changes are the bundle's (drift rebuilt by swap)
  cp "$d/live.sets" "$d/snap.sets"
  # sets: only those that do not exist yet (content-addressed names)
  awk -v before="$d/sets.before" 'BEGIN { while ((getline l < before) > 0) have[l] = 1 }
    ($1 == "create" || $1 == "add" || $1 == "flush") && ($2 in have) { next } { print }' \
    "$d/ipset.restore" > "$d/sets.new"
  # existing sets of the bundle whose entries drifted (deleted or added by hand) are
  # rebuilt aside under a temporary name and swapped in (atomic per set)
  cat "$d/sets.drifted" >> "$d/sets.new"
  if [ -s "$d/sets.new" ]; then
    ipset restore < "$d/sets.new" 2>>"$d/err" || cw_rollback "ipset restore refused the sets: $(cw_err)"
  fi
  for f in iptables ip6tables; do
    if [ "$f" = iptables ]; then b="$d/iptables.v4"; else b="$d/iptables.v6"; fi
    grep -q '^\*filter' "$b" 2>/dev/null || continue
    if [ "$f" = ip6tables ] && ! cw_have6; then cw_rollback "the bundle has IPv6 rules but the cell has no ip6tables/IPv6"; fi
    cw_payload "$f" "$b" "$d/snap.$f" > "$d/payload.$f"
    "$f-restore" -w --noflush < "$d/payload.$f" 2>>"$d/err" || cw_rollback "$f-restore refused the payload: $(cw_err)"
  done
  # verify (read back once: the same read gives the record)
  cw_read_cw "$d/new" || cw_rollback "iptables-save: $(cw_err)"
  for f in iptables ip6tables; do
    if [ "$f" = iptables ]; then b="$d/iptables.v4"; else b="$d/iptables.v6"; fi
    grep -q '^\*filter' "$b" 2>/dev/null || continue
    cw_verify "$b" "$d/new.$f" > "$d/verify" 2>&1 || cw_rollback "verification failed: $(tr '\n' ' ' < "$d/verify")"
  done
  # destroy unreferenced cellwall sets (never cw-d-*): the kernel refuses sets in use
  ipset list -n 2>/dev/null | awk -v b="$d/ipset.restore" -v re="$cw_setre" '
    BEGIN { while ((getline l < b) > 0) { split(l, w, " "); if (w[1] == "create") keep[w[2]] = 1 } }
    $0 ~ re && $0 !~ /^cw-d-/ && !($0 in keep)' |
  while read -r s; do ipset destroy "$s" 2>/dev/null; done
  cw_record "$d/new"
  cw_result changed
  cw_unlock
}

cw_plan() {
  echo "CW-SECTION live"
  cw_c=$(cw_chains)
  printf '%s\n' "$cw_c"; echo sets; cw_sets
  cw_now="c:$(printf '%s\n' "$cw_c" | cw_hash)"
  cw_recorded
  echo "CW-SECTION end"
  if [ -x "$cw_job" ]; then echo "CW-SECTION job"; fi
  # "unchanged" here covers the chains; the operator compares the sets printed above with the bundle
  if [ "$cw_rec_bundle" = "$cw_bundle" ] && [ "$cw_rec_live" = "$cw_now" ]; then cw_result unchanged
  else cw_result would-change; fi
}

`;

/** nft backend: table inet cellwall, staged nft -f transactions as apply's (sent only with nft bundles) */
const NFT = String.raw`

# canonical lines of an nft table (an nft list block or ruleset.nft): "C chain", "R chain rule"
# (counter values dropped), "S set statement" (one per statement), "E set element" (a host's /32
# or /128 dropped, as the kernel prints it). Same as nftCanon in src/fleet/plan.ts.
cw_nftcanon() {
  awk '
    function elems(l,  n, e, i, x, end) {
      end = sub(/[ \t]*\}.*$/, "", l); n = split(l, e, ",")
      for (i = 1; i <= n; i++) {
        x = e[i]; gsub(/^[ \t]+|[ \t]+$/, "", x); gsub(/\/(32|128) /, " ", x); sub(/\/(32|128)$/, "", x)
        if (x != "") print "E " name " " x
      }
      if (end) inel = 0
    }
    { l = $0; sub(/^[ \t]+/, "", l); sub(/[ \t]+$/, "", l) }
    l == "" || l ~ /^#/ { next }
    inel { elems(l); next }
    l ~ /^table .*\{$/ { kind = "T"; next }
    l ~ /^(set|map) [^ ]+ \{$/ { kind = "S"; split(l, w, " "); name = w[2]; next }
    l ~ /^chain [^ ]+ \{$/ { kind = "C"; split(l, w, " "); name = w[2]; print "C " name; next }
    l == "}" { kind = (kind == "S" || kind == "C") ? "T" : ""; next }
    kind == "S" && l ~ /^elements = \{/ { sub(/^elements = \{[ \t]*/, "", l); inel = 1; elems(l); next }
    kind == "S" { n = split(l, p, ";"); for (i = 1; i <= n; i++) { x = p[i]; gsub(/^[ \t]+|[ \t]+$/, "", x); if (x != "") print "S " name " " x }; next }
    kind == "C" { gsub(/counter packets [0-9]+ bytes [0-9]+/, "counter", l); print "R " name " " l; next }'
}
# what the verify compares: "C chain rule-count" and "S set", sorted
cw_nftshape() {
  awk '$1 == "C" { c[$2] += 0 } $1 == "R" && $3 != "type" { c[$2]++ } $1 == "S" { s[$2] = 1 }
    END { for (k in c) print "C " k " " c[k]; for (k in s) print "S " k }' | sort
}
cw_nft_names() { awk -v k="$1" '$1 == k && $2 !~ /^cw-d-/ { print $2 }' "$2" | sort -u; }
cw_nft_record() {
  cw_q=$(cw_nftquick)
  printf '%s\n' "$cw_bundle" "n:$cw_q" "$cw_q" > "$cw_state/fleet-applied.new" && mv "$cw_state/fleet-applied.new" "$cw_state/fleet-applied"
}
cw_nft_rollback() { # $1 = reason
  cw_phase rolling back
  { echo 'table inet cellwall {}'; echo 'delete table inet cellwall'; cat "$d/snap.nft"; } > "$d/rb.nft"
  if nft -f "$d/rb.nft" 2>>"$d/err"; then cw_result rolled-back "$1"
  else cw_result failed "$1; ROLLBACK FAILED: $(cw_err)"; fi
  cw_unlock
  exit 1
}

# the blocks of ruleset.nft of the sets listed in $1 ("name [new name]"), under the new name when
# given, in one table block: sets.idx (made by the operator) says which table block of the script
# holds each set's full block (with its elements)
cw_nft_blocks() { # $1 = selection
  awk -v sel="$1" -v idx="$d/sets.idx" '
    BEGIN { while ((getline l < idx) > 0) { split(l, w, " "); at[w[1]] = w[2] }
      while ((getline l < sel) > 0) { n = split(l, w, " "); want[w[1]] = 1; as[w[1]] = n > 1 ? w[2] : w[1] }
      print "table inet cellwall {" }
    $0 == "table inet cellwall {" { tb++; next }
    p { print; if ($0 == "  }") p = 0; next }
    /^  set [^ ]+ \{$/ && ($2 in want) && at[$2] == tb { p = 1; print "  set " as[$2] " {" }
    END { print "}" }' "$d/ruleset.nft"
}
# add element lines putting the live members of the dynamic sets listed in $1 ("name [new name]") into the new name
cw_nft_members() { # $1 = selection
  awk -v sel="$1" 'BEGIN { while ((getline l < sel) > 0) { n = split(l, w, " "); if (w[1] ~ /^cw-d-/) as[w[1]] = n > 1 ? w[2] : w[1] } }
    $1 == "E" && ($2 in as) { e = $0; sub(/^E [^ ]+ /, "", e); print "add element inet cellwall " as[$2] " { " e " }" }' "$d/live.canon"
}
# nft -f of $1 (one transaction)
cw_nft_load() { nft -f "$1" 2>>"$d/err"; }
# the table as before (the cheap fingerprint taken before the first write), for the result of a refused step
cw_nft_refused() { # $1 = what was refused
  if [ "$(cw_nftquick)" = "$cw_q" ]; then cw_result rolled-back "$1, nothing changed: $(cw_err)"
  else cw_result failed "$1, but the table now differs from before: $(cw_err)"; fi
  cw_unlock; exit 1
}

# Like apply --backend nft (nftTransactions in src/state/nft.ts): a set that the transaction switching
# the rules creates looks empty for a moment after the commit (docs/nft.md), so over a live table
#  1. stage: the sets the table lacks, with their elements, and those declared otherwise (type, flags,
#     comment) under cw-tmp-NAME (dynamic ones with their live members), unreferenced;
#  2. switch (tx.nft): the chains declared otherwise deleted (all chains flushed first) + ruleset.nft
#     with the redeclared sets renamed to cw-tmp-NAME + the older policy's chains and sets removed +
#     the old redeclared sets deleted;
#  3. recreate (only with redeclared sets): them under their own names; 4. final: ruleset.nft as it
#     is + delete the cw-tmp- copies.
# Each step leaves a table that means the old policy or the new one. A refused stage or switch
# changes nothing (the staged sets are deleted); a refused recreate or final restores the snapshot.
cw_nft_apply() {
  : > "$d/err"
  if [ -x "$cw_job" ]; then
    cw_phase applying with "$cw_job"
    if "$cw_job" apply --payload "$d" --backend nft > "$d/job.out" 2>&1 < /dev/null; then cw_result changed applied by the cellwall job
    else cw_result failed "cellwall job: $(tail -n 3 "$d/job.out" | tr '\n' ' ')"; fi
    return
  fi
  command -v nft >/dev/null 2>&1 || { cw_result failed "nft not found on the cell"; exit 1; }
  cw_lock || { cw_result failed cannot take the lock in "$cw_state"; exit 1; }
  # the whole table, elements too: the snapshot for a rollback, and the full comparison
  nft list ruleset > "$d/ruleset.live" 2>>"$d/err" || { cw_result failed "nft list ruleset: $(cw_err)"; cw_unlock; exit 1; }
  cw_nfttable < "$d/ruleset.live" > "$d/snap.nft"
  rm -f "$d/ruleset.live"
  cw_nftcanon < "$d/snap.nft" > "$d/live.canon"
  cw_nftcanon < "$d/ruleset.nft" > "$d/want.canon"
  grep '^E ' "$d/want.canon" | grep -v '^E cw-d-' | sort -u > "$d/want.e"
  grep '^E ' "$d/live.canon" | grep -v '^E cw-d-' | sort -u > "$d/live.e"
  cw_nft_names S "$d/live.canon" > "$d/sets.live"
  cw_nft_names S "$d/want.canon" > "$d/sets.want"
  cw_nft_names C "$d/live.canon" > "$d/chains.live"
  cw_nft_names C "$d/want.canon" > "$d/chains.want"
  comm -12 "$d/sets.live" "$d/sets.want" > "$d/sets.both"
  # existing sets of the script whose elements differ (altered on the cell): flushed and refilled
  comm -3 "$d/want.e" "$d/live.e" | awk -v both="$d/sets.both" 'BEGIN { while ((getline l < both) > 0) b[l] = 1 }
    ($2 in b) && !($2 in seen) { seen[$2] = 1; print $2 }' > "$d/sets.drift"
  # an older policy's chains and content-addressed sets (dynamic cw-d- sets are kept)
  comm -23 "$d/chains.live" "$d/chains.want" > "$d/chains.stale"
  comm -23 "$d/sets.live" "$d/sets.want" > "$d/sets.stale"
  comm -13 "$d/sets.live" "$d/sets.want" > "$d/sets.missing"
  # every set (dynamic ones too): those the table lacks (staged), those it declares otherwise (redeclared)
  awk '$1 == "S" { print $2 }' "$d/live.canon" | sort -u > "$d/all.live"
  awk '$1 == "S" { print $2 }' "$d/want.canon" | sort -u > "$d/all.want"
  # chains both have, declared otherwise (hook, priority, policy; a base chain on one side only)
  grep '^R [^ ]* type ' "$d/want.canon" | sort -u > "$d/want.ct"
  grep '^R [^ ]* type ' "$d/live.canon" | sort -u > "$d/live.ct"
  comm -3 "$d/want.ct" "$d/live.ct" | awk '{ print $2 }' | sort -u | comm -12 - "$d/chains.live" | comm -12 - "$d/chains.want" > "$d/chains.redecl"
  : > "$d/sets.new"; : > "$d/sets.redecl"
  if [ -s "$d/snap.nft" ]; then
    comm -13 "$d/all.live" "$d/all.want" > "$d/sets.new"
    grep '^S ' "$d/want.canon" | sort -u > "$d/want.s"
    grep '^S ' "$d/live.canon" | sort -u > "$d/live.s"
    comm -3 "$d/want.s" "$d/live.s" | awk '{ print $2 }' | sort -u | comm -12 - "$d/all.live" | comm -12 - "$d/all.want" > "$d/sets.redecl"
  fi
  cw_q=$(cw_nftquick)
  cw_recorded
  if [ "$cw_rec_bundle" = "$cw_bundle" ] && [ "$cw_rec_live" = "n:$cw_q" ] && [ ! -s "$d/sets.drift" ] && [ ! -s "$d/chains.stale" ] &&
    [ ! -s "$d/sets.stale" ] && [ ! -s "$d/sets.missing" ] && [ ! -s "$d/sets.new" ] && [ ! -s "$d/sets.redecl" ] && [ ! -s "$d/chains.redecl" ]; then
    cw_result unchanged; cw_unlock; return
  fi
  cw_phase applying
  # 1. stage
  awk '{ print $1, "cw-tmp-" $1 }' "$d/sets.redecl" > "$d/sets.tmp"
  cat "$d/sets.new" "$d/sets.tmp" > "$d/sets.stage"
  if [ -s "$d/sets.stage" ]; then
    { cw_nft_blocks "$d/sets.stage"; cw_nft_members "$d/sets.stage"; } > "$d/stage.nft"
    cw_nft_load "$d/stage.nft" || cw_nft_refused "nft refused the staged sets"
  fi
  # 2. switch: the script with the redeclared sets' names replaced by their staging names (names are
  # plain identifiers: the operator checked them in sets.idx, and they are in the bundle's script)
  awk '{ printf "s/@%s\\([^A-Za-z0-9_.-]\\)/@cw-tmp-%s\\1/g\ns/@%s$/@cw-tmp-%s/\ns/^  set %s {$/  set cw-tmp-%s {/\n", $1, $1, $1, $1, $1, $1 }' \
    "$d/sets.redecl" > "$d/rename.sed"
  {
    # a chain declared otherwise is deleted (every live chain flushed first: nothing refers to it
    # any more; the script refills ours) and the script declares it anew
    if [ -s "$d/chains.redecl" ]; then
      while read -r c; do echo "flush chain inet cellwall $c"; done < "$d/chains.live"
      while read -r c; do echo "delete chain inet cellwall $c"; done < "$d/chains.redecl"
    fi
    grep -vxF -f "$d/sets.redecl" "$d/sets.drift" | while read -r s; do echo "flush set inet cellwall $s"; done
    if [ -s "$d/sets.redecl" ]; then sed -f "$d/rename.sed" "$d/ruleset.nft"; else cat "$d/ruleset.nft"; fi
    while read -r c; do echo "flush chain inet cellwall $c"; done < "$d/chains.stale"
    while read -r c; do echo "delete chain inet cellwall $c"; done < "$d/chains.stale"
    while read -r s; do echo "delete set inet cellwall $s"; done < "$d/sets.stale"
    while read -r s; do echo "delete set inet cellwall $s"; done < "$d/sets.redecl"
  } > "$d/tx.nft"
  if ! cw_nft_load "$d/tx.nft"; then
    # one transaction: the kernel applied none of it (checked); the staged sets, unreferenced, go
    if [ -s "$d/sets.stage" ]; then
      awk '{ print "delete set inet cellwall " (NF > 1 ? $2 : $1) }' "$d/sets.stage" > "$d/unstage.nft"
      cw_nft_load "$d/unstage.nft"
    fi
    cw_nft_refused "nft refused the transaction"
  fi
  # 3. recreate, 4. final
  if [ -s "$d/sets.redecl" ]; then
    { cw_nft_blocks "$d/sets.redecl"; cw_nft_members "$d/sets.redecl"; } > "$d/recreate.nft"
    cw_nft_load "$d/recreate.nft" || cw_nft_rollback "nft refused to recreate the redeclared sets: $(cw_err)"
    { cat "$d/ruleset.nft"; while read -r s; do echo "delete set inet cellwall cw-tmp-$s"; done < "$d/sets.redecl"; } > "$d/final.nft"
    cw_nft_load "$d/final.nft" || cw_nft_rollback "nft refused the final transaction: $(cw_err)"
  fi
  # verify: every chain of the script with its rule count, every set, no other chain
  nft -t list ruleset 2>>"$d/err" | cw_nfttable | cw_nftcanon | cw_nftshape > "$d/new.shape"
  cw_nftshape < "$d/want.canon" > "$d/want.shape"
  comm -23 "$d/want.shape" "$d/new.shape" | sed 's/^/missing or different: /' > "$d/verify"
  awk '$1 == "C"' "$d/new.shape" | comm -23 - "$d/want.shape" | sed 's/^/not in the script: /' >> "$d/verify"
  [ -s "$d/verify" ] && cw_nft_rollback "verification failed: $(head -n 5 "$d/verify" | tr '\n' ' ')"
  cw_nft_record
  cw_result changed
  cw_unlock
}

cw_nft_plan() {
  echo "CW-SECTION live"
  nft list ruleset 2>/dev/null | cw_nfttable | cw_nftcanon | grep -v '^E cw-d-'
  echo "CW-SECTION end"
  cw_q=$(cw_nftquick)
  cw_recorded
  if [ -x "$cw_job" ]; then echo "CW-SECTION job"; fi
  # "unchanged" here covers the structure; the operator compares the elements printed above with the script
  if [ "$cw_rec_bundle" = "$cw_bundle" ] && [ "$cw_rec_live" = "n:$cw_q" ]; then cw_result unchanged
  else cw_result would-change; fi
}
`;

/** the library each backend's stream carries */
const LIB = { iptables: compact(COMMON + APPLY), nft: compact(COMMON + APPLY + NFT) };

