/**
 * The parsed form of a policy file that the readers consume, produced by
 * both parsers: the YAML parser's tree converted (./source.ts, aliases
 * resolved to the anchored node) and the JSON fast path (./json.ts).
 * Offsets are UTF-16 indices into the file's text; line and column are
 * derived from them only when a location is needed.
 */
export type Node = MapNode | SeqNode | ScalarNode | OtherNode;

export interface ScalarNode {
  kind: 'scalar';
  /** offset of the scalar's first character (its opening quote when quoted) */
  start: number;
  /** offset just after the scalar's source text (after the closing quote) */
  end: number;
  /** string, number, boolean or null */
  value: unknown;
  /** written in single or double quotes */
  quoted: boolean;
}

export interface MapNode {
  kind: 'map';
  start: number;
  /** keys[i] maps to values[i]; null for a missing key or value */
  keys: Array<Node | null>;
  values: Array<Node | null>;
}

export interface SeqNode {
  kind: 'seq';
  start: number;
  items: Array<Node | null>;
}

/** anything else the YAML parser can produce (never a valid policy value) */
export interface OtherNode {
  kind: 'other';
  start: number;
}
