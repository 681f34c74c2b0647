/**
 * Kernel object names derived from policy names. Group names are data (app
 * GUIDs, space names such as `Space.A`): they are mapped to a restricted
 * alphabet here and never reach a shell or a kernel name as written.
 */
import { sha256 } from '../core/sha256.js';
import type { Phase } from './model.js';

/** ipset names are limited to 31 characters; `cw-d-` + stem + `-r4` leaves 22 for the stem. */
export const MAX_STEM = 22;
const HASHED_PREFIX = 13;

/**
 * The name stem of a group: lowercased, every character outside [a-z0-9-]
 * replaced by '-', when that fits in 22 characters; longer names keep their
 * first 13 such characters plus '-' and 8 hex digits of sha256(name).
 */
export function groupStem(group: string): string {
  const clean = group.toLowerCase().replace(/[^a-z0-9-]/g, '-');
  if (clean.length <= MAX_STEM) return clean;
  const digest = sha256(group).slice(0, 8);
  return `${clean.slice(0, HASHED_PREFIX)}-${digest}`;
}

/** The ipset holding a dynamic group's members for one phase and family, e.g. `cw-d-space-a-r4`. */
export function dynamicSetName(group: string, phase: Phase, family: 4 | 6): string {
  return `cw-d-${groupStem(group)}-${phase === 'running' ? 'r' : 's'}${family}`;
}
