/**
 * Quoting of free text (policy names, descriptions, file names) into
 * iptables-restore and ipset payloads. The text is data: it must never end
 * the quoted word, start a new option, or a new line.
 */

const PRINTABLE = /^[\x20-\x7e]*$/;

/** Replace control characters (newlines included) and non-ASCII by safe stand-ins; cut to at most `max` characters. */
export function sanitizeText(s: string, max: number): string {
  // eslint-disable-next-line no-control-regex
  const clean = PRINTABLE.test(s) ? s : s.replace(/[\x00-\x1f\x7f]/g, ' ').replace(/[^\x20-\x7e]/g, '?');
  return clean.length > max ? clean.slice(0, max - 3) + '...' : clean;
}

/**
 * A double-quoted word for iptables-restore: `"` and `\` are backslash-escaped,
 * control characters replaced. The kernel's comment limit is 255 bytes; the
 * text is cut before escaping, so the result never ends inside an escape.
 */
export function iptQuote(s: string, max = 240): string {
  const clean = sanitizeText(s, max);
  return NEEDS_ESCAPE.test(clean) ? `"${clean.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"` : `"${clean}"`;
}

const NEEDS_ESCAPE = /["\\]/;

/** Text for a `#` comment line of a payload: one line, printable. */
export function commentLine(s: string): string {
  return `# ${sanitizeText(s, 400)}`;
}
