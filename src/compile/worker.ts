/**
 * Worker thread of `cellwall compile`, started before the policy is loaded.
 * Two jobs, answered in order:
 *  - `redundancy`: the policy-level redundant-rule check (packed rules, see
 *    redundancy.ts), run while the main thread compiles;
 *  - `ipset`: render the ipset payload (the biggest, 115 MB at CF scale),
 *    hash it and, given a path, write it there, while the main thread renders
 *    the iptables payloads and the manifest. Answers with the sha256 and the
 *    bytes (transferred, not copied) or, when it wrote them, their length.
 */
import { writeFile } from 'node:fs/promises';
import { parentPort } from 'node:worker_threads';
import { renderIpsetInput, type IpsetInput } from '../render/ipset.js';
import { sha256 } from '../core/sha256.js';
import { findPackedRedundant, type RedundancyInput, type Redundant } from './redundancy.js';

export type WorkerJob =
  | { id: number; kind: 'ipset'; input: IpsetInput; /** write the payload to this file instead of answering with it */ writeTo?: string }
  | { id: number; kind: 'redundancy'; input: RedundancyInput };

export interface IpsetWorkerResult {
  id: number;
  sha256: string;
  length: number;
  bytes?: Uint8Array;
  /** the payload could not be written (the message of the error) */
  writeError?: string;
}

export interface RedundancyResult { id: number; found: Redundant[][] }

async function ipset(job: Extract<WorkerJob, { kind: 'ipset' }>): Promise<void> {
  const bytes = renderIpsetInput(job.input);
  // the write runs on libuv's threads while this one hashes
  const writing = job.writeTo ? writeFile(job.writeTo, bytes).then(() => undefined, (e: Error) => e.message) : undefined;
  const sum = sha256(bytes);
  if (writing) {
    const writeError = await writing;
    parentPort!.postMessage({ id: job.id, sha256: sum, length: bytes.length, ...(writeError ? { writeError } : {}) } satisfies IpsetWorkerResult);
    return;
  }
  // a Buffer may be a view of a larger pooled ArrayBuffer: transfer a buffer of its own
  const own = bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength ? bytes : Uint8Array.prototype.slice.call(bytes);
  parentPort!.postMessage({ id: job.id, sha256: sum, length: own.length, bytes: own } satisfies IpsetWorkerResult, [own.buffer as ArrayBuffer]);
}

// one job at a time, in the order they arrive
let queue = Promise.resolve();
parentPort!.on('message', (job: WorkerJob) => {
  queue = queue.then(() => {
    if (job.kind === 'redundancy') parentPort!.postMessage({ id: job.id, found: findPackedRedundant(job.input) } satisfies RedundancyResult);
    else return ipset(job);
  });
});
