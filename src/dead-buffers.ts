import {setFlagsFromString} from 'node:v8'
import {runInNewContext} from 'node:vm'

/**
 * Memory (issue 15): a stream that passes through dbb's main thread leaves one dead Buffer per
 * read (64 KiB from pg_dump's pipe), plus the compressor's and the check's outputs. Their bytes
 * live outside V8's heap, and V8 frees them only when a collection finds the small JS objects that
 * own them dead. Collections are paced by JS allocation, which is a few hundred bytes per chunk,
 * and while an incremental marking cycle runs (V8 starts one when external memory grows, then
 * advances it slowly because the JS heap barely grows), even scavenges free none of them: a gzip
 * backup without pigz (dbb's own compressor reads the whole dump) held 33–36 MiB of dead buffers
 * and peaked at 128–134 MB RSS, against 95–96 MB with pigz (BENCHMARKS.md, "Session 10").
 *
 * So whoever reads a stream calls the returned function with each chunk's size, and every
 * `intervalBytes` it collects: a scavenge of the 1 MB young generation (≈ 1 ms) while the
 * buffers' memory is less than `fullCollectionBytes` above what the last full collection left, a
 * full collection when it is more (dead buffers the scavenges could not free; one every ≈ 8 MB of
 * input on the benchmark). Buffers still in flight are alive and unaffected.
 *
 * V8 exposes `gc()` only with --expose-gc; set after start-up, the flag reaches contexts created
 * later, so the function is taken from a fresh vm context (as jest's leak detector does). Where
 * that fails, the returned function does nothing: memory is then what it was before, never a failure.
 */
export const DEAD_BUFFER_CHECK_INTERVAL_BYTES = 1024 * 1024
export const DEAD_BUFFER_FULL_COLLECTION_BYTES = 8 * 1024 * 1024

type GcFunction = (options: {type: 'minor' | 'major'}) => void
let exposedGc: GcFunction | null | undefined

function loadGc(): GcFunction | null {
  if (exposedGc !== undefined) return exposedGc
  try {
    setFlagsFromString('--expose-gc')
    const gc = runInNewContext('gc') as unknown
    exposedGc = typeof gc === 'function' ? (gc as GcFunction) : null
  } catch {
    exposedGc = null
  }

  return exposedGc
}

export function deadBufferCollector(intervalBytes = DEAD_BUFFER_CHECK_INTERVAL_BYTES, fullCollectionBytes = DEAD_BUFFER_FULL_COLLECTION_BYTES): (bytes: number) => void {
  const gc = loadGc()
  if (!gc) return () => {}
  let sinceLast = 0
  // What a full collection left: buffers alive then (an S3 upload's parts, a server's requests)
  // are not garbage, so only growth above them counts.
  let liveAfterFull = 0
  return (bytes: number) => {
    sinceLast += bytes
    if (sinceLast < intervalBytes) return
    sinceLast = 0
    if (process.memoryUsage().arrayBuffers - liveAfterFull <= fullCollectionBytes) {
      gc({type: 'minor'})
      return
    }

    gc({type: 'major'})
    liveAfterFull = process.memoryUsage().arrayBuffers
  }
}
