/**
 * Worker thread of `cellwall compile`, started before the policy is loaded.
 * Jobs, handled in the order they arrive:
 *  - `redundancy`: the policy-level redundant-rule check (packed rules, see
 *    redundancy.ts), run while the main thread compiles;
 *  - `sets`: a batch of sets as the compiler creates them, rendered into the
 *    ipset payload's blocks right away (no answer);
 *  - `ipset`: the compile is done: put the payload (the biggest, 115 MB at
 *    CF scale) together in load order, hash it and, given a path, write it
 *    there, while the main thread renders the iptables payloads and the
 *    manifest. Answers with the sha256 and the bytes (transferred, not
 *    copied) or, when it wrote them, their length.
 */
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { parentPort } from 'node:worker_threads';
import { IpsetRenderer, type IpsetBatch } from '../render/ipset.js';
import { findPackedRedundant, type RedundancyInput, type Redundant } from './redundancy.js';

export type WorkerJob =
  | { id: number; kind: 'sets'; batch: IpsetBatch }
  | {
    id: number; kind: 'ipset'; header: string[];
    /** references to each set, in the order the sets came (setRefs) */
    refs: Float64Array;
    /** write the payload to this file instead of answering with it */
    writeTo?: string;
  }
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

let sets = new IpsetRenderer();

async function ipset(job: Extract<WorkerJob, { kind: 'ipset' }>): Promise<void> {
  const parts = sets.payload(job.header, job.refs);
  sets = new IpsetRenderer();
  let length = 0;
  for (const p of parts) length += p.length;
  // the write runs on libuv's threads while this one hashes
  const writing = job.writeTo ? writeParts(job.writeTo, parts, length).then(() => undefined, (e: Error) => e.message) : undefined;
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  const sha256 = h.digest('hex');
  if (writing) {
    const writeError = await writing;
    parentPort!.postMessage({ id: job.id, sha256, length, ...(writeError ? { writeError } : {}) } satisfies IpsetWorkerResult);
    return;
  }
  const bytes = Buffer.concat(parts, length);
  // a Buffer may be a view of a larger pooled ArrayBuffer: transfer a buffer of its own
  const own = bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength ? bytes : Uint8Array.prototype.slice.call(bytes);
  parentPort!.postMessage({ id: job.id, sha256, length, bytes: own } satisfies IpsetWorkerResult, [own.buffer as ArrayBuffer]);
}

/** the slices, in order, as one file (one writev: nothing is copied) */
async function writeParts(path: string, parts: Buffer[], length: number): Promise<void> {
  const fh = await open(path, 'w');
  try {
    const { bytesWritten } = await fh.writev(parts);
    if (bytesWritten !== length) throw new Error(`wrote ${bytesWritten} of ${length} bytes`);
  } finally {
    await fh.close();
  }
}

let queue = Promise.resolve();
parentPort!.on('message', (job: WorkerJob) => {
  queue = queue.then(() => {
    if (job.kind === 'redundancy') parentPort!.postMessage({ id: job.id, found: findPackedRedundant(job.input) } satisfies RedundancyResult);
    else if (job.kind === 'sets') sets.add(job.batch);
    else return ipset(job);
  });
});
