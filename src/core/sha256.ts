/**
 * sha256 hex of a string (UTF-8) or bytes. One-shot crypto.hash (Node >=
 * 20.12) where there is one: a third of createHash's cost per call, which
 * counts for the ~10^5 content-addressed names of a CF-scale compile.
 */
import * as crypto from 'node:crypto';

type OneShot = (alg: string, data: string | Uint8Array, enc: 'hex') => string;
const oneShot = (crypto as unknown as { hash?: OneShot }).hash;

export const sha256: (data: string | Uint8Array) => string = typeof oneShot === 'function'
  ? (data) => oneShot('sha256', data, 'hex')
  : (data) => crypto.createHash('sha256').update(data).digest('hex');
