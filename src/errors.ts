/**
 * User-facing errors. Anything thrown as a CellwallError is printed as its
 * message (no stack trace) and turns into the given exit code. Anything else
 * escaping a command is a bug and is printed with its stack.
 */
export class CellwallError extends Error {
  constructor(message: string, readonly exitCode = 1) {
    super(message);
    this.name = 'CellwallError';
  }
}

/** A location in a source file. line and col are 1-based. path is the field path, e.g. `security_groups.dns[0].ports`. */
export interface SourceLoc {
  file: string;
  line: number;
  col: number;
  path: string;
}

export type Severity = 'error' | 'warning';

/** One problem found in user input. */
export interface Diagnostic {
  severity: Severity;
  loc: SourceLoc;
  /** what is wrong, e.g. `invalid IPv4 address "192.168.0.0."` */
  message: string;
  /** the expected form, e.g. `an IPv4/IPv6 address, CIDR, or range a-b` */
  expected?: string;
}

/** `file:line:col: error: path: message (expected: ...)` */
export function formatDiagnostic(d: Diagnostic): string {
  const where = `${d.loc.file}:${d.loc.line}:${d.loc.col}`;
  const path = d.loc.path ? `${d.loc.path}: ` : '';
  const exp = d.expected ? ` (expected ${d.expected})` : '';
  return `${where}: ${d.severity}: ${path}${d.message}${exp}`;
}

/** Thrown when input has one or more errors; carries all of them. */
export class DiagnosticsError extends CellwallError {
  constructor(readonly diagnostics: Diagnostic[]) {
    super(diagnostics.map(formatDiagnostic).join('\n'), 1);
    this.name = 'DiagnosticsError';
  }
}
