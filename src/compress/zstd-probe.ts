import {type ChildExit, runFilter, runFilterSync} from '../backup/child-process'

/**
 * One run of the zstd program on a frame of known size, which answers both questions dbb has about
 * the zstd on PATH: is it there and does it decode (requireCodec, before a backup or restore touches
 * anything), and does `zstd -t` report the decoded size as the in-stream check reads it
 * (src/compress/gzip-check.ts). Asked once per process and PATH (another PATH can find another
 * program): one zstd start of 3–12 ms here, off the event loop.
 */

/**
 * How the in-stream check runs zstd: `zstd -t` decodes every frame, verifies its XXH64 content
 * checksum and its end, throws the output away inside zstd and prints the decoded total on stderr
 * (`/*stdin*\ : 67543861 bytes`, zstd's "%-20s: %llu bytes", which older versions start with \r).
 */
export const ZSTD_TEST_ARGS = ['-t', '--no-progress']
export const ZSTD_SIZE_REPORT = /:\s*(\d+) bytes\s*$/

/**
 * A zstd frame (with its XXH64 content checksum) of 27 bytes, `dbb: zstd -t reports sizes\n`, made
 * with `printf … | zstd -q -c --check`.
 */
const PROBE_FRAME = Buffer.from([
  40, 181, 47, 253, 4, 88, 217, 0, 0, 100, 98, 98, 58, 32, 122, 115, 116, 100, 32, 45, 116, 32, 114, 101, 112, 111, 114, 116, 115, 32, 115, 105, 122, 101, 115, 10, 164, 134, 249, 213,
])
const PROBE_SIZE = 27

export interface ZstdProbe {
  /** How the run ended: `spawnError` when zstd did not start (ENOENT: not on PATH). */
  exit: ChildExit
  stderr: string
  /** Whether `zstd -t` reported the frame's size as ZSTD_SIZE_REPORT reads it. */
  reportsSize: boolean
}

const probes = new Map<string, Promise<ZstdProbe>>()
const settled = new Map<string, ZstdProbe>()
const pathKey = () => process.env.PATH ?? ''

const judged = (exit: ChildExit, stderr: string): ZstdProbe => ({
  exit,
  stderr,
  reportsSize: exit.code === 0 && ZSTD_SIZE_REPORT.exec(stderr.trimEnd())?.[1] === String(PROBE_SIZE),
})

/**
 * Runs the probe, once per PATH while it succeeds. A run that failed (no zstd, a crash, the 10 s
 * limit on a loaded machine) is not kept: `dbb serve` lives for months, and one bad moment must not
 * fail its zstd backups until a restart.
 */
export function probeZstd(): Promise<ZstdProbe> {
  const key = pathKey()
  let probe = probes.get(key)
  if (!probe) {
    probe = runFilter('zstd', ZSTD_TEST_ARGS, PROBE_FRAME).then(({stderr, ...exit}) => {
      const result = judged(exit, stderr)
      if (exit.spawnError || exit.code !== 0) probes.delete(key)
      else settled.set(key, result)
      return result
    })
    probes.set(key, probe)
  }

  return probe
}

/**
 * Whether `zstd -t` reports the decoded size as the in-stream check reads it: the probe's answer
 * when requireCodec already ran it for this PATH (every backup does), else the probe run now,
 * synchronously. A zstd that words the line differently (a version this dbb was not tested with)
 * would otherwise fail every zstd backup after the dump, loudly but for nothing; the check then
 * decodes into `wc -c` instead, as strong a proof, a little slower.
 */
export function zstdReportsSize(): boolean {
  const key = pathKey()
  let probe = settled.get(key)
  if (!probe) {
    const {status, stderr} = runFilterSync('zstd', ZSTD_TEST_ARGS, PROBE_FRAME)
    probe = judged({code: status, signal: null}, stderr)
    if (status === 0) settled.set(key, probe)
  }

  return probe.reportsSize
}
