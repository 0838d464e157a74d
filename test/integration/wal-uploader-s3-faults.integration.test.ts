import {ListObjectsV2Command} from '@aws-sdk/client-s3'
import {randomBytes} from 'node:crypto'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import {Writable} from 'node:stream'
import {gunzipSync} from 'node:zlib'

import {createLogger} from '../../src/logger'
import {s3Provider} from '../../src/plugins/s3/src/index'
import {lockSpool, runUploader, spooledNames} from '../../src/wal/spool'
import {tempDir} from '../helpers/cli'
import {FaultKind, InjectedFailure, KINDS, faultAt, startRecordingProxy} from '../helpers/recording-proxy'
import {S3Server, startS3Server} from '../helpers/s3-server'

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true'

const SEGMENT_BYTES = 1024 * 1024
const segmentName = (n: number) => `0000000100000000000000${n.toString(16).toUpperCase().padStart(2, '0')}`
/** Queued in the spool by a push (the copy path). */
const SPOOLED = [1]
/** Marked ready in pg_wal, not pushed yet: the uploader stores them ahead and leaves a marker each. */
const READY = [2, 3, 4]
/** How long a case may take to store everything once the fault is over (back-off starts at 0.5 s). */
const CONVERGE_MS = 60_000

/**
 * The spool uploader that `dbb serve` and the detached `wal spool-upload` run, reading ahead pg_wal,
 * against the real S3-protocol server through the real AWS SDK, with a fault at every request index
 * (500 ×3, a reset ×3, a stall: faultAt). What a push relies on must hold through every one of them:
 * a marker (which acknowledges a segment to PostgreSQL with no copy) exists only for a segment that
 * storage holds byte for byte; a spooled segment leaves the spool only once stored; the uploader
 * keeps going after the fault and stores everything; the error it reported while failing is taken
 * back; no read-ahead copy or partial object is left (a compressed segment is one PUT, below the part size). The uploader runs
 * in-process: the detached one would sit out its 10 s idle exit after each of the ≈ 40 cases.
 */
describe('WAL spool uploader with read-ahead: S3 faults at every request index', () => {
  let s3: S3Server
  let workDir: string
  let caseNumber = 0

  beforeAll(async () => {
    s3 = await startS3Server()
    workDir = await tempDir('dbb-uploader-faults-')
  }, 60_000)

  afterAll(async () => {
    await s3?.destroy()
    if (workDir) await fs.rm(workDir, {recursive: true, force: true})
  })

  async function objectKeys(prefix: string): Promise<string[]> {
    const page = await s3.client().send(new ListObjectsV2Command({Bucket: s3.bucket, Prefix: `${prefix}/`}))
    return (page.Contents ?? []).map((object) => object.Key!.slice(prefix.length + 1)).sort()
  }

  async function storedSegment(prefix: string, name: string): Promise<Buffer | undefined> {
    const file = path.join(s3.directory, s3.bucket, prefix, 'wal', `${name}.gz._S3rver_object`)
    return fs.readFile(file).then(gunzipSync, () => undefined)
  }

  /** One uploader run from the same start (one spooled segment, three ready ones); returns the requests it made and what broke. */
  async function runCase(fault?: InjectedFailure): Promise<{requests: number; problems: string[]; logged: string}> {
    const dir = path.join(workDir, `case-${++caseNumber}`)
    const walDir = path.join(dir, 'pg_wal')
    const spoolDir = path.join(dir, 'spool')
    await fs.mkdir(path.join(walDir, 'archive_status'), {recursive: true})
    await fs.mkdir(spoolDir, {recursive: true})
    const contents = new Map<string, Buffer>()
    for (const n of [...SPOOLED, ...READY]) contents.set(segmentName(n), Buffer.concat([randomBytes(SEGMENT_BYTES / 4), Buffer.alloc((SEGMENT_BYTES * 3) / 4)]))
    for (const n of SPOOLED) await fs.writeFile(path.join(spoolDir, segmentName(n)), contents.get(segmentName(n))!)
    for (const n of READY) {
      await fs.writeFile(path.join(walDir, segmentName(n)), contents.get(segmentName(n))!)
      await fs.writeFile(path.join(walDir, 'archive_status', `${segmentName(n)}.ready`), '')
    }

    const proxy = await startRecordingProxy(() => s3.port)
    if (fault) proxy.inject(fault)
    const prefix = `case-${caseNumber}`
    let logged = ''
    const logger = createLogger({format: 'json', level: 'info', destination: new Writable({write: (chunk, _encoding, done) => ((logged += String(chunk)), done())})})
    const storage = await s3Provider.create(s3.dbbEnv({S3_PREFIX: prefix}, proxy.endpoint), {logger})
    const lock = (await lockSpool(spoolDir, walDir))!
    const controller = new AbortController()
    const markers = async () => (await fs.readdir(path.join(spoolDir, 'uploaded')).catch(() => [] as string[])).filter((entry) => /^[0-9A-F]{24}$/.test(entry)).sort()
    const problems: string[] = []
    // Every marker, the moment it is seen: storage must already hold its segment whole.
    const checkMarkers = async () => {
      for (const name of await markers()) {
        const stored = await storedSegment(prefix, name)
        if (!stored?.equals(contents.get(name)!)) problems.push(`marker for ${name} while storage ${stored ? 'holds other bytes' : 'does not hold it'}`)
      }
    }

    const run = runUploader({storage, spoolDir, parallel: 2, logger, signal: controller.signal, lock, walDir})
    const deadline = Date.now() + CONVERGE_MS
    for (;;) {
      await checkMarkers()
      const done = (await spooledNames(spoolDir)).length === 0 && (await markers()).length === READY.length
      const errorLeft = await fs.access(path.join(spoolDir, 'uploader.error')).then(() => true, () => false)
      if (done && !errorLeft) break
      if (Date.now() > deadline) {
        problems.push(`not converged within ${CONVERGE_MS} ms (spool: ${(await spooledNames(spoolDir)).join(', ') || 'empty'}; markers: ${(await markers()).join(', ')}; uploader.error ${errorLeft ? 'left' : 'gone'})`)
        break
      }

      await new Promise((resolve) => setTimeout(resolve, 20))
    }

    controller.abort()
    const result = await run
    await lock.release()
    await storage.close?.()
    await proxy.close()

    if (result.readAheadFailed) problems.push('a storage fault was taken for a read-ahead failure (pg_wal is readable)')
    for (const [name, content] of contents) if (!(await storedSegment(prefix, name))?.equals(content)) problems.push(`${name} not stored byte for byte`)
    const keys = await objectKeys(prefix)
    const expected = [...contents.keys()].map((name) => `wal/${name}.gz`).sort()
    if (JSON.stringify(keys) !== JSON.stringify(expected)) problems.push(`storage holds ${keys.join(', ')}; expected exactly ${expected.join(', ')}`)
    const aheadDir = path.join(spoolDir, 'ahead')
    const aheadLeft = (await Promise.all((await fs.readdir(aheadDir).catch(() => [] as string[])).map((entry) => fs.readdir(path.join(aheadDir, entry))))).flat()
    if (aheadLeft.length > 0) problems.push(`read-ahead copies left: ${aheadLeft.join(', ')}`)
    await fs.rm(dir, {recursive: true, force: true})
    return {requests: proxy.requests.length, problems, logged}
  }

  it('stores everything after any single fault; a marker only ever names a segment storage holds whole', async () => {
    const clean = await runCase()
    expect(clean.problems).toEqual([])
    expect(clean.requests).toBeGreaterThanOrEqual(contentsCount())

    const problems: string[] = []
    let failuresReported = 0
    for (let index = 1; index <= clean.requests; index++) {
      for (const kind of KINDS) {
        const outcome = await runCase(faultAt(index, kind as FaultKind))
        problems.push(...outcome.problems.map((problem) => `${kind} at request ${index}/${clean.requests}: ${problem}`))
        if (outcome.logged.includes('"event":"wal.spool_upload_failed"')) failuresReported += 1
      }
    }

    expect(problems).toEqual([])
    // The faults were felt, not all absorbed by retries: 500 ×3 and reset ×3 exhaust the SDK's attempts.
    expect(failuresReported).toBeGreaterThan(0)
  }, 900_000)
})

function contentsCount(): number {
  return SPOOLED.length + READY.length
}
