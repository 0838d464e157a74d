import {ChildProcess, spawn} from 'node:child_process'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'

import {ANSWER_WAIT_MS, PREFETCHER_READY_WAIT_MS, answerFromPrefetcher, fetchFromQueue, fileIdentity, identityFileText, identityLine, prefetchQueue, pushFromReadAhead, queueDirFor, storageIdentity, takeMatchingMarker} from '../../src/wal/foreground'
import {standInPrefetcher} from '../helpers/wal'

/** The no-config answers of archive_command / restore_command (src/wal/foreground.ts), on real files. */
describe('WAL foreground (src/wal/foreground.ts)', () => {
  let dir: string
  let walDir: string
  let spoolDir: string
  const name = '000000010000000000000007'
  const walPath = () => path.join(walDir, name)
  const marker = () => path.join(spoolDir, 'uploaded', name)
  const recordMarker = () => fs.writeFileSync(marker(), `${fileIdentity(fs.statSync(walPath(), {bigint: true}))}\n`)

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dbb-foreground-'))
    walDir = path.join(dir, 'pg_wal')
    spoolDir = path.join(dir, 'spool')
    fs.mkdirSync(walDir)
    fs.mkdirSync(path.join(spoolDir, 'uploaded'), {recursive: true})
    fs.writeFileSync(walPath(), Buffer.alloc(64 * 1024, 7))
    // PostgreSQL marks a segment ready before it runs archive_command for it.
    fs.mkdirSync(path.join(walDir, 'archive_status'))
    fs.writeFileSync(path.join(walDir, 'archive_status', `${name}.ready`), '')
  })

  afterEach(() => fs.rmSync(dir, {recursive: true, force: true}))

  it('acknowledges from a marker that records this very file, and consumes it', () => {
    recordMarker()
    expect(pushFromReadAhead(walPath(), {WAL_SPOOL_DIR: spoolDir}, 0)).toBe(0)
    expect(fs.existsSync(marker())).toBe(false)
    // Consumed: a second push of the same name no longer finds it.
    expect(pushFromReadAhead(walPath(), {WAL_SPOOL_DIR: spoolDir}, 0)).toBeUndefined()
  })

  it('never acknowledges from a marker of another file under the name: renamed onto it, or written since', () => {
    recordMarker()
    const recycled = path.join(walDir, 'recycled')
    fs.writeFileSync(recycled, Buffer.alloc(64 * 1024, 7))
    fs.renameSync(recycled, walPath())
    expect(takeMatchingMarker(spoolDir, walPath())).toBe(false)
    expect(fs.existsSync(marker())).toBe(true)

    recordMarker()
    const later = new Date(Date.now() + 5000)
    fs.utimesSync(walPath(), later, later)
    // Not even waited for, with a live uploader reading ahead here: a mismatching marker will not change.
    fs.writeFileSync(path.join(spoolDir, 'uploader.pid'), `${process.pid}\n${walDir}\n`)
    const started = Date.now()
    expect(pushFromReadAhead(walPath(), {WAL_SPOOL_DIR: spoolDir}, 3000)).toBeUndefined()
    expect(Date.now() - started).toBeLessThan(2000)
    fs.rmSync(path.join(spoolDir, 'uploader.pid'))
    fs.writeFileSync(marker(), '')
    expect(takeMatchingMarker(spoolDir, walPath())).toBe(false)
  })

  it('waits only for a live uploader that reads ahead this pg_wal and reports no error', () => {
    const wait = (lock: string | undefined, error = false) => {
      fs.rmSync(path.join(spoolDir, 'uploader.pid'), {force: true})
      fs.rmSync(path.join(spoolDir, 'uploader.error'), {force: true})
      if (lock !== undefined) fs.writeFileSync(path.join(spoolDir, 'uploader.pid'), lock)
      if (error) fs.writeFileSync(path.join(spoolDir, 'uploader.error'), 'storage down\n')
      const started = Date.now()
      expect(pushFromReadAhead(walPath(), {WAL_SPOOL_DIR: spoolDir}, 1500)).toBeUndefined()
      return Date.now() - started
    }

    expect(wait(undefined)).toBeLessThan(1000)
    expect(wait(`${process.pid}\n/some/other/pg_wal\n`)).toBeLessThan(1000)
    expect(wait(`${process.pid}\n${walDir}\n`, true)).toBeLessThan(1000)
    expect(wait(`999999999\n${walDir}\n`)).toBeLessThan(1000)
    expect(wait(`${process.pid}\n${walDir}\n`)).toBeGreaterThanOrEqual(1500)
    // A segment PostgreSQL did not mark ready (a push by hand, a tool that is not the archiver): the
    // read-ahead never copies it, so there is no marker to wait for.
    fs.rmSync(path.join(walDir, 'archive_status', `${name}.ready`))
    expect(wait(`${process.pid}\n${walDir}\n`)).toBeLessThan(1000)
  })

  it('takes only segment names, and only with WAL_SPOOL_DIR set', () => {
    recordMarker()
    expect(pushFromReadAhead(walPath(), {}, 0)).toBeUndefined()
    expect(pushFromReadAhead(path.join(walDir, '00000002.history'), {WAL_SPOOL_DIR: spoolDir}, 0)).toBeUndefined()
  })

  it('serves a queued segment by rename and tells the prefetcher where recovery is; a miss is left to the full path', () => {
    const env = {WAL_SPOOL_DIR: spoolDir, BACKUP_LOCAL_DIR: path.join(dir, 'store')}
    const queue = prefetchQueue(name, env)!
    fs.mkdirSync(queue, {recursive: true})
    fs.writeFileSync(path.join(queue, name), Buffer.alloc(1024 * 1024, 1))
    const started: [string, number][] = []
    const dest = path.join(walDir, 'RECOVERYXLOG')
    // Left by a prefetcher that no longer runs (a killed replay's read-ahead): never served; the
    // next prefetcher removes it before it serves. Then one runs (this process stands in for it).
    expect(fetchFromQueue(name, dest, env, () => {})).toBeUndefined()
    fs.writeFileSync(path.join(queue, 'uploader.pid'), '999999999\n\n')
    expect(fetchFromQueue(name, dest, env, () => {})).toBeUndefined()
    expect(fs.existsSync(dest)).toBe(false)
    // A live holder that has not published the queue yet (between its lock and its clean-up of
    // what the dead one left; the identity file still names that one): not served either.
    fs.writeFileSync(path.join(queue, 'identity'), identityFileText(identityLine(storageIdentity(env)), {pid: 999_999_999}))
    fs.writeFileSync(path.join(queue, 'uploader.pid'), `${process.pid}\n\n`)
    expect(fetchFromQueue(name, dest, env, () => {})).toBeUndefined()
    expect(fs.existsSync(dest)).toBe(false)
    standInPrefetcher(queue, storageIdentity(env))
    expect(fetchFromQueue(name, dest, env, (wanted, size) => started.push([wanted, size]))).toBe(0)
    expect(fs.readFileSync(dest).equals(Buffer.alloc(1024 * 1024, 1))).toBe(true)
    expect(fs.readFileSync(path.join(queue, 'wanted'), 'utf8')).toBe(`${name} ${1024 * 1024}\n`)
    // The running prefetcher is told (`wanted`), not started a second time.
    expect(started).toEqual([])
    expect(fetchFromQueue('000000010000000000000008', dest, env, () => {})).toBeUndefined()
    expect(prefetchQueue(name, {...env, WAL_PREFETCH: '0'})).toBeUndefined()
    expect(prefetchQueue(name, {...env, WAL_PREFETCH: 'lots'})).toBeUndefined()
  })
})

describe('identityLine (what bin/dbb-wal compares to find its archive’s prefetch queue)', () => {
  it('is the storage identity one space apart, as the sh builds it from its flags and environment', () => {
    expect(identityLine(storageIdentity({STORAGE_BACKEND: 's3', S3_BUCKET: 'wal', S3_PREFIX: 'prod/'}))).toBe('backend=s3 local= S3_ENDPOINT= S3_REGION= S3_BUCKET=wal S3_PREFIX=prod/')
    expect(identityLine(storageIdentity({BACKUP_LOCAL_DIR: '/backups'}))).toBe('backend=local local=/backups S3_ENDPOINT= S3_REGION= S3_BUCKET= S3_PREFIX=')
  })

  it('is not published for a value with white space, which the sh never serves (it could read as another identity)', () => {
    expect(identityLine(storageIdentity({BACKUP_LOCAL_DIR: '/backups S3_ENDPOINT=x'}))).toBeUndefined()
    expect(identityLine(storageIdentity({S3_PREFIX: 'a\tb'}))).toBeUndefined()
  })
})

describe('startPrefetcherEarly (bin/run.js, before the rest of dbb loads)', () => {
  it('starts the prefetcher for a .history probe or a segment when prefetch is on and none runs, and tells the full path it did', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dbb-early-prefetch-'))
    try {
      jest.isolateModules(() => {
        const foreground = require('../../src/wal/foreground') as typeof import('../../src/wal/foreground')
        const {processStartTime} = require('../../src/process-alive') as typeof import('../../src/process-alive')
        const started: Array<[string, number]> = []
        const start = (name: string, segmentSize: number) => started.push([name, segmentSize])
        const env = {WAL_SPOOL_DIR: dir, BACKUP_LOCAL_DIR: '/archive'}
        // Prefetch off (no spool, WAL_PREFETCH=0, or a value the full path reports), or a file the prefetcher does not serve.
        foreground.startPrefetcherEarly('00000002.history', {BACKUP_LOCAL_DIR: '/archive'}, start)
        foreground.startPrefetcherEarly('00000002.history', {...env, WAL_PREFETCH: '0'}, start)
        foreground.startPrefetcherEarly('00000002.history', {...env, WAL_PREFETCH: 'many'}, start)
        foreground.startPrefetcherEarly('000000010000000000000002.00000028.backup', env, start)
        expect(started).toEqual([])
        // A live prefetcher holds this archive's queue: it is not started twice.
        const queueDir = foreground.queueDirFor(dir, foreground.storageIdentity(env))
        fs.mkdirSync(queueDir, {recursive: true})
        fs.writeFileSync(path.join(queueDir, 'uploader.pid'), `${process.pid}\n\n${processStartTime(process.pid)}\n`)
        foreground.startPrefetcherEarly('00000002.history', env, start)
        expect(started).toEqual([])
        expect(foreground.prefetcherStartedEarly()).toBe(false)
        // None runs (another archive's does not count): started with no segment size, which backup_label or `wanted` gives it.
        fs.rmSync(path.join(queueDir, 'uploader.pid'))
        foreground.startPrefetcherEarly('00000002.history', env, start)
        expect(started).toEqual([['00000002.history', 0]])
        expect(foreground.prefetcherStartedEarly()).toBe(true)
      })
    } finally {
      fs.rmSync(dir, {recursive: true, force: true})
    }
  })
})

describe('startUploaderEarly (bin/run.js, an async push the read-ahead did not answer)', () => {
  it('starts the uploader for a segment when none holds the spool, and ensureUploader then starts no second one', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dbb-early-uploader-'))
    try {
      await jest.isolateModulesAsync(async () => {
        const foreground = require('../../src/wal/foreground') as typeof import('../../src/wal/foreground')
        const spool = require('../../src/wal/spool') as typeof import('../../src/wal/spool')
        const {processStartTime} = require('../../src/process-alive') as typeof import('../../src/process-alive')
        const started: Array<[string, string]> = []
        const start = (spoolDir: string, walDir: string) => started.push([spoolDir, walDir])
        const spoolDir = path.join(dir, 'spool')
        const segment = path.join(dir, 'pg_wal', '000000010000000000000002')
        // No spool, or a file that is not a segment (its push takes the full path, which starts the uploader as before).
        foreground.startUploaderEarly(segment, {}, start)
        foreground.startUploaderEarly(path.join(dir, 'pg_wal', '00000002.history'), {WAL_SPOOL_DIR: spoolDir}, start)
        expect(started).toEqual([])
        // A live uploader holds the spool: not started twice.
        fs.mkdirSync(spoolDir)
        fs.writeFileSync(path.join(spoolDir, 'uploader.pid'), `${process.pid}\n${path.dirname(segment)}\n${processStartTime(process.pid)}\n`)
        foreground.startUploaderEarly(segment, {WAL_SPOOL_DIR: spoolDir}, start)
        expect(started).toEqual([])
        expect(foreground.uploaderStartedEarly()).toBe(false)
        // None runs (a relative WAL_SPOOL_DIR resolves as the full path resolves it): started with this pg_wal to read ahead.
        fs.rmSync(path.join(spoolDir, 'uploader.pid'))
        const relative = path.relative(process.cwd(), spoolDir)
        foreground.startUploaderEarly(segment, {WAL_SPOOL_DIR: ` ${relative} `}, start)
        expect(started).toEqual([[spoolDir, path.dirname(segment)]])
        expect(foreground.uploaderStartedEarly()).toBe(true)
        expect(foreground.uploaderLogFor(relative)).toBe(path.join(spoolDir, 'uploader.log'))
        // The full path's ensureUploader, in the same process, before the new uploader took the lock:
        // it would start a second Node on two busy cores. (A start would create uploader.log.)
        await spool.ensureUploader(spoolDir, path.join(dir, 'no-such-cli.js'), path.dirname(segment))
        expect(fs.existsSync(path.join(spoolDir, 'uploader.log'))).toBe(false)
      })
    } finally {
      fs.rmSync(dir, {recursive: true, force: true})
    }
  })
})

describe('answerFromPrefetcher (the first fetch asks the prefetcher it started)', () => {
  const name = '00000002.history'
  let dir: string
  let queueDir: string
  let env: NodeJS.ProcessEnv
  let destination: string

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dbb-answer-'))
    env = {WAL_SPOOL_DIR: path.join(dir, 'spool'), BACKUP_LOCAL_DIR: '/archive'}
    queueDir = queueDirFor(path.join(dir, 'spool'), storageIdentity(env))
    destination = path.join(dir, 'RECOVERYHISTORY')
    fs.mkdirSync(queueDir, {recursive: true})
  })

  afterEach(() => fs.rmSync(dir, {recursive: true, force: true}))

  /**
   * A stand-in prefetcher (a real process holding the queue's lock) that answers the first question
   * it reads with `outcome`, or exits without answering when outcome is 'die'.
   */
  function standIn(outcome: 'absent' | 'failed' | 'queued' | 'another question' | 'die' | 'unpublished'): ChildProcess {
    // Published under its own lock (identityFileText), except 'unpublished': the identity file still names the previous holder.
    const identity = outcome === 'unpublished' ? identityFileText(identityLine(storageIdentity(env)), {pid: 999_999_999}) : undefined
    const script = `
      const fs = require('fs'), path = require('path'), q = ${JSON.stringify(queueDir)}
      fs.writeFileSync(path.join(q, 'identity'), ${JSON.stringify(identity ?? null)} ?? (${JSON.stringify(identityLine(storageIdentity(env)))} + '\\n' + process.pid + ' \\n'))
      fs.writeFileSync(path.join(q, 'uploader.pid'), process.pid + '\\n\\n')
      const timer = setInterval(() => {
        let ask = ''
        try { ask = fs.readFileSync(path.join(q, 'wanted.ask'), 'utf8').trim() } catch {}
        const [nonce, name] = ask.split(' ')
        if (!name) return
        const outcome = ${JSON.stringify(outcome)}
        if (outcome === 'die') process.exit(0)
        if (outcome === 'queued') fs.writeFileSync(path.join(q, name), 'history of timeline 2\\n')
        const answer = outcome === 'another question' ? '1.2 ' + name + ' absent' : nonce + ' ' + name + ' ' + outcome
        fs.writeFileSync(path.join(q, 'wanted.answer'), answer + '\\n')
        clearInterval(timer)
        setTimeout(() => process.exit(0), 5000)
      }, 10)`
    return spawn(process.execPath, ['-e', script], {stdio: 'ignore'})
  }

  const answered = async (outcome: Parameters<typeof standIn>[0]) => {
    const child = standIn(outcome)
    try {
      // The stand-in holds the lock before the question is asked (as awaitPrefetcherReady waits for).
      while (!fs.existsSync(path.join(queueDir, 'uploader.pid'))) await new Promise((resolve) => setTimeout(resolve, 10))
      const began = Date.now()
      const answer = answerFromPrefetcher(name, destination, env, () => {})
      return {answer, ms: Date.now() - began}
    } finally {
      child.kill()
      fs.rmSync(path.join(queueDir, 'uploader.pid'), {force: true})
      fs.rmSync(path.join(queueDir, 'wanted.answer'), {force: true})
    }
  }

  it('hands over what the prefetcher queued and exits on its "absent"; anything else goes on to the full path, with nothing at the destination', async () => {
    expect((await answered('absent')).answer).toBe('absent')
    expect(fs.existsSync(destination)).toBe(false)
    expect((await answered('queued')).answer).toBe('queued')
    expect(fs.readFileSync(destination, 'utf8')).toBe('history of timeline 2\n')
    expect(fs.existsSync(path.join(queueDir, name))).toBe(false)
    fs.rmSync(destination)
    // "failed", and an answer to another question (never taken for this one): the full path asks storage.
    expect((await answered('failed')).answer).toBeUndefined()
    expect((await answered('another question')).answer).toBeUndefined()
    // A prefetcher that dies without answering is not waited for to the end of ANSWER_WAIT_MS.
    const died = await answered('die')
    expect(died.answer).toBeUndefined()
    expect(died.ms).toBeLessThan(ANSWER_WAIT_MS)
    expect(fs.existsSync(destination)).toBe(false)
  }, 30_000)

  it('neither asks nor hands over while the prefetcher it started has not published the queue (what a killed one left is still there)', async () => {
    fs.writeFileSync(path.join(queueDir, name), 'left by a killed prefetcher\n')
    const unpublished = await answered('unpublished')
    expect(unpublished.answer).toBeUndefined()
    expect(unpublished.ms).toBeGreaterThanOrEqual(PREFETCHER_READY_WAIT_MS)
    expect(fs.existsSync(destination)).toBe(false)
    expect(fs.existsSync(path.join(queueDir, 'wanted.ask'))).toBe(false)
  }, 30_000)
})
