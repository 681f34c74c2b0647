/** Human reasons for the WASM parser's error codes. */
import { E } from './wasm.js';

export interface RawError {
  code: number;
  /** character offset inside the entry */
  offset: number;
  aux: number;
}

function quoteChar(ch: string): string {
  if (ch === ' ') return 'unexpected space';
  if (ch === '\t') return 'unexpected tab';
  if (ch === ',') return 'unexpected "," (one entry expected here, not a comma list)';
  if (ch === '\n' || ch === '\r') return 'unexpected line break';
  const cp = ch.codePointAt(0) ?? 0;
  if (cp < 32 || cp === 127) return `unexpected control character U+${cp.toString(16).padStart(4, '0').toUpperCase()}`;
  return `unexpected character "${ch}"`;
}

/**
 * The reason an entry is malformed. `network` is the canonical network CIDR,
 * only needed for HOST_BITS.
 */
export function reasonFor(text: string, err: RawError, network?: string): string {
  const at = (len: number) => text.slice(err.offset, err.offset + len);
  const v6 = text.includes(':');
  switch (err.code) {
    case E.EMPTY: return 'empty entry';
    case E.BAD_CHAR: return quoteChar(String.fromCodePoint(text.codePointAt(err.offset) ?? err.aux));
    case E.V4_TRAILING_DOT: return 'trailing "." after last octet';
    case E.V4_LEADING_ZERO: return `leading zero in octet "${at(err.aux)}"`;
    case E.V4_OCTET_RANGE: return `octet "${at(err.aux)}" exceeds 255`;
    case E.V4_FEW_OCTETS: return `IPv4 address has ${err.aux} octet${err.aux === 1 ? '' : 's'}, expected 4`;
    case E.V4_MANY_OCTETS: return 'IPv4 address has more than 4 octets';
    case E.V4_EMPTY_OCTET: return err.offset === 0 || text[err.offset - 1] === '-' ? 'leading "." before first octet' : 'empty octet ("..")';
    case E.V6_GROUP_LONG: return `IPv6 group "${at(err.aux)}" has more than 4 hex digits`;
    case E.V6_EMPTY_GROUP: return 'empty IPv6 group (":::" or a misplaced ":")';
    case E.V6_MULTI_DC: return '"::" may appear only once in an IPv6 address';
    case E.V6_FEW_GROUPS: return `IPv6 address has ${err.aux} group${err.aux === 1 ? '' : 's'}, expected 8 (or use "::")`;
    case E.V6_MANY_GROUPS: return 'IPv6 address has more than 8 groups';
    case E.V6_LEADING_COLON: return 'leading ":" in IPv6 address (did you mean "::"?)';
    case E.V6_TRAILING_COLON: return 'trailing ":" in IPv6 address (did you mean "::"?)';
    case E.V6_V4_POSITION: return 'embedded IPv4 address must form the last 32 bits of the IPv6 address';
    case E.PREFIX_EMPTY: return 'missing prefix length after "/"';
    case E.PREFIX_LEADING_ZERO: return `leading zero in prefix length "${at(err.aux)}"`;
    case E.PREFIX_TOO_LONG: return `prefix length ${err.aux >= 1000 ? at(text.length) : err.aux} exceeds ${v6 ? 128 : 32}`;
    case E.HOST_BITS: return `host bits set: ${text} (network address is ${network ?? '?'})`;
    case E.RANGE_REVERSED: {
      const dash = text.indexOf('-');
      return `range start ${text.slice(0, dash)} is after end ${text.slice(dash + 1)}`;
    }
    case E.RANGE_MIXED: return 'range mixes IPv4 and IPv6 addresses';
    case E.RANGE_NOT_ALLOWED: return 'a range a-b is not allowed here';
    case E.ADDRESS_NOT_ALLOWED: return 'a bare address is not allowed here (write a CIDR)';
    case E.CIDR_NOT_ALLOWED: return 'expected a single address, not a CIDR or range';
    default: return `malformed entry (code ${err.code})`;
  }
}
