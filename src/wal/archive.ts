import {createHash} from 'node:crypto'
import {close, createReadStream, createWriteStream, fstat, fsync} from 'node:fs'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import {PassThrough, Writable} from 'node:stream'
import {pipeline} from 'node:stream/promises'
import {promisify} from 'node:util'

import {FILE_CODEC_CHUNK, createFileCompressor, isDamagedStreamError} from '../compress/codec-streams'
import {FileDecoderSpec, ProgramIntoFile, compressFileWithProgram, fileCompressorProgram, fileDecoderProgram, gzipTrailerLength} from '../compress/file-programs'
import {CODECS, CodecName, codecOfKey} from '../compress/codecs'
import {loadConfig} from '../config'
import {AGE_CONTENT_TYPE, createDecryptor, createEncryptor, createObjectDecoder, identityFailure} from '../encrypt/age'
import {isEncryptedKey} from '../encrypt/recipients'
import {NotFoundError, OperationError, UsageError, errorMessage, isAlreadyExists, isNotFound} from '../errors'
import type {Logger} from '../logger'
import type {StorageBackend} from '../storage/contract'
import {createTrackedTemporaryFile, removeDeadFetchesFiles, temporaryFileFor} from './fetch-exit'
import {isWalFileName, walFileKind, walKey, walKeys} from './segments'
import {requireSameCluster, segmentHeaderOfFile} from './system-identifier'

export interface PushResult {
  name: string
  key: string
  /** `stored`: written now; `already-archived`: an identical copy was already in storage. */
  outcome: 'stored' | 'already-archived'
  sizeBytes: number
  /** Of the uncompressed file; left out when the caller asked for no hash (`hash: false`) and the file was stored now. */
  sha256?: string
}

/**
 * Archives one WAL file (segment, `.history`, `.backup` or `.partial`) as `wal/<name>.gz` (or `.zst`
 * with COMPRESSION=zstd); the archive_command.
 * Resolves only once storage holds it durably, so PostgreSQL may recycle the segment.
 *
 * Idempotent: PostgreSQL re-runs archive_command for a segment whose earlier success it never
 * saw (a crash between upload and acknowledgement), so an existing object with the same content
 * counts as success. Different content under the same name means two servers are archiving into
 * one location (split-brain, or a restored copy still archiving): that fails loudly and never
 * overwrites. Content is compared by the sha256 of the uncompressed file; the stored copy is
 * re-read to compute it, which only happens on this rare path.
 */
export async function pushWal(
  storage: StorageBackend,
  filePath: string,
  options: {
    logger?: Logger
    signal?: AbortSignal
    codec?: CodecName
    encryptTo?: readonly string[]
    /**
     * false: no sha256 of a file stored now. It only reports what was stored (`wal push --json`, the
     * log); the stored copy's integrity is its gzip CRC-32 / zstd XXH64, checked by every fetch, and
     * the re-push comparison hashes on its own path. The async uploader saves ≈ 25–40 ms of CPU on
     * its one thread per 16 MiB segment (BENCHMARKS.md, WAL archiving).
     */
    hash?: boolean
  } = {},
): Promise<PushResult> {
  const name = path.basename(filePath)
  if (!isWalFileName(name)) {
    throw new UsageError(`${name} is not a WAL file name (expected a segment such as 000000010000000000000003, or a .history / .backup file)`)
  }

  const codec = options.codec ?? walCodec()
  const recipients = options.encryptTo ?? walRecipients()
  const key = walKey(name, codec, recipients !== undefined)
  try {
    // Segments carry their cluster's system identifier: refuse one of another cluster before anything
    // is stored. Their header also gives the size of a whole segment, which is all that is stored.
    const kind = walFileKind(name)
    let wholeBytes: number | undefined
    if (kind === 'segment' || kind === 'partial') {
      const header = await segmentHeaderOfFile(filePath, Number.parseInt(name.slice(0, 8), 16)).catch((error: NodeJS.ErrnoException) => {
        throw new OperationError(`cannot read ${filePath}: ${error.code ?? error.message}`)
      })
      if (header !== undefined) await requireSameCluster(storage, name, header.systemIdentifier)
      if (kind === 'segment') wholeBytes = header?.segmentSize
    }

    // The common re-push case (archiver retry after a crash) is found before uploading anything,
    // under either codec: COMPRESSION may have changed between the first attempt and this one.
    const archived = (await Promise.all(walKeys(name, codec, recipients !== undefined).map(async (candidate) => ((await storage.stat(candidate)) ? candidate : undefined)))).find(Boolean)
    if (archived) return await compareWithArchived(storage, name, archived, await hashFile(filePath), options)
    options.logger?.debug({event: 'wal.push_uploading', wal: name, key}, `not archived yet, uploading ${name}`)
    const stored = await storeCompressed(storage, filePath, key, codec, options.signal, recipients, options.hash ?? true, wholeBytes)
    options.logger?.info({event: 'wal.pushed', wal: name, sizeBytes: stored.sizeBytes, sha256: stored.sha256}, `archived ${name}`)
    return {name, key, outcome: 'stored', ...stored}
  } catch (error) {
    // Another pusher won a race for the same name: judge by content, like the stat() path.
    if (isAlreadyExists(error)) return compareWithArchived(storage, name, key, await hashFile(filePath), options)
    if (error instanceof OperationError || error instanceof UsageError) throw error
    throw new OperationError(`archiving ${name} into ${storage.location} failed: ${errorMessage(error)}`, {cause: error})
  }
}

/** The codec new WAL is archived with: COMPRESSION from the environment, validated as everywhere (a bad value exits 2). */
function walCodec(): CodecName {
  return loadConfig(['compression'], {COMPRESSION: process.env.COMPRESSION}).compression.codec
}

/** ENCRYPTION_RECIPIENTS from the environment, as every WAL push path reads COMPRESSION: a malformed one exits 2. */
function walRecipients(): string[] | undefined {
  if (process.env.ENCRYPTION_RECIPIENTS === undefined || process.env.ENCRYPTION_RECIPIENTS.trim() === '') return undefined
  return loadConfig(['encryption'], {ENCRYPTION_RECIPIENTS: process.env.ENCRYPTION_RECIPIENTS}).encryption.recipients
}

/** The identity wal fetch, the prefetcher and a re-push comparison decrypt with: AGE_IDENTITY_FILE (a path; restore_command may pass it as a flag). */
function walIdentity(): string | undefined {
  const file = process.env.AGE_IDENTITY_FILE
  return file === undefined || file.trim() === '' ? undefined : file
}

/** A fetch only orders its attempts by COMPRESSION: a bad value must not stop a recovery that reads both codecs. */
function walCodecOrGzip(): CodecName {
  const configured = process.env.COMPRESSION?.trim().toLowerCase()
  return configured === 'zstd' ? 'zstd' : 'gzip'
}

/** file → sha256 tap → compressor → [age] → size tap → storage (no overwrite), as one pipeline; a failure on either side stops both. */
async function storeCompressed(
  storage: StorageBackend,
  filePath: string,
  key: string,
  codec: CodecName,
  signal?: AbortSignal,
  recipients?: readonly string[],
  hashContent = true,
  wholeBytes?: number,
): Promise<{sizeBytes: number; sha256?: string}> {
  const handle = await fs.open(filePath, 'r').catch((error: NodeJS.ErrnoException) => {
    throw new OperationError(`cannot read ${filePath}: ${error.code ?? error.message}`)
  })
  const hash = createHash('sha256')
  let sentBytes = 0
  let readBytes = 0
  async function* hashTap(source: AsyncIterable<Buffer>) {
    for await (const chunk of source) {
      readBytes += chunk.length
      if (hashContent) hash.update(chunk)
      yield chunk
    }

    requireWhole()
  }

  // A segment is archived only whole. PostgreSQL hands archive_command complete segments, but a
  // file cut short or rewritten while it is read (a copy another process truncates and rewrites)
  // would otherwise be stored under the segment's final name, and recovery would stop there.
  // Failing before the stream ends makes the storage write fail like any broken stream.
  function requireWhole() {
    if (wholeBytes !== undefined && readBytes !== wholeBytes) {
      throw new OperationError(`${filePath} was ${readBytes} bytes when read, not the ${wholeBytes} of a whole segment (its header's segment size): not archived`)
    }
  }

  async function* countTap(source: AsyncIterable<Buffer>) {
    for await (const chunk of source) {
      sentBytes += chunk.length
      yield chunk
    }
  }

  const controller = new AbortController()
  let firstError: unknown
  const fail = (error: unknown) => {
    firstError ??= error
    controller.abort(error)
  }

  const onAbort = () => fail(new OperationError('WAL push interrupted'))
  signal?.addEventListener('abort', onAbort, {once: true})
  // igzip reading the file itself (gzip, the default; src/compress/file-programs.ts): dbb sees only
  // the compressed bytes. What igzip read is known from the gzip trailer's length, checked before
  // the stream ends as hashTap checks what dbb read; the sha256 (a report only) is then a read of
  // its own. Encrypted WAL keeps the in-process path, where age reads what dbb compressed.
  let openedBytes = 0
  async function* trailerTap(source: AsyncIterable<Buffer>) {
    let tail = Buffer.alloc(0)
    for await (const chunk of source) {
      tail = Buffer.concat([tail, chunk.subarray(Math.max(0, chunk.length - 4))]).subarray(-4)
      yield chunk
    }

    readBytes = gzipTrailerLength(tail)
    requireWhole()

    // Any other file (.history, .backup, .partial) must be what it was when opened: igzip's exit 0 is
    // the only other witness that it read to the end.
    if (wholeBytes === undefined && readBytes !== openedBytes % 2 ** 32) {
      throw new OperationError(`${filePath} was ${readBytes} bytes when read, not the ${openedBytes} it had when opened: not archived`)
    }
  }

  const body = new PassThrough()
  try {
    const level = CODECS[codec].defaultLevel
    const program = recipients ? undefined : fileCompressorProgram(codec, level)
    if (program) openedBytes = (await handle.stat()).size
    // In-process, one thread per segment: the uploader's parallelism is across segments. Whatever
    // still runs when this returns is stopped by terminate() below.
    const compressor = program ? undefined : createFileCompressor(codec, level)
    const encryptor = recipients ? createEncryptor(recipients) : undefined
    const source = program ? undefined : handle.createReadStream({highWaterMark: 1024 * 1024})
    const contentHash = program && hashContent ? hashFile(filePath) : undefined
    contentHash?.catch(fail)
    const produce = (
      program
        ? pipeline(compressFileWithProgram(program, level, handle.fd), trailerTap, countTap, body, {signal: controller.signal})
        : encryptor
          ? pipeline(source!, hashTap, compressor!, encryptor, countTap, body, {signal: controller.signal})
          : pipeline(source!, hashTap, compressor!, countTap, body, {signal: controller.signal})
    )
      .catch(fail)
      .finally(() => Promise.all([compressor?.terminate(), encryptor?.terminate()]))
    const contentType = encryptor ? AGE_CONTENT_TYPE : CODECS[codec].contentType
    const store = storage.put(key, body, {overwrite: false, signal: controller.signal, contentType}).catch((error: unknown) => {
      fail(error)
      return undefined
    })
    const [, stored] = await Promise.all([produce, store])
    if (firstError !== undefined) throw firstError
    if (stored && stored.sizeBytes !== sentBytes) {
      throw new OperationError(`storage reports ${stored.sizeBytes} bytes for ${key}, but ${sentBytes} were sent`)
    }

    if (contentHash) return {sizeBytes: sentBytes, sha256: await contentHash}
    return {sizeBytes: sentBytes, sha256: hashContent ? hash.digest('hex') : undefined}
  } finally {
    signal?.removeEventListener('abort', onAbort)
    await handle.close().catch(() => {})
  }
}

async function compareWithArchived(
  storage: StorageBackend,
  name: string,
  key: string,
  localSha256: string,
  options: {logger?: Logger; signal?: AbortSignal},
): Promise<PushResult> {
  const archived = await hashArchived(storage, key, options.signal)
  if (archived.sha256 !== localSha256) {
    options.logger?.error({event: 'wal.conflict', wal: name, archivedSha256: archived.sha256, localSha256}, 'WAL conflict')
    throw new OperationError(
      `${name} is already archived in ${storage.location} with different content (sha256 ${archived.sha256.slice(0, 12)}… there, ` +
        `${localSha256.slice(0, 12)}… here): possible split-brain — another server is archiving into the same location. ` +
        'Nothing was overwritten; point this server at its own storage location or prefix.',
    )
  }

  options.logger?.info({event: 'wal.already_archived', wal: name, sha256: localSha256}, `${name} was already archived with identical content`)
  return {name, key, outcome: 'already-archived', sizeBytes: archived.sizeBytes, sha256: localSha256}
}

/**
 * The sha256 of an archived file's uncompressed content, and its stored (compressed) size. An
 * encrypted copy is decrypted with AGE_IDENTITY_FILE; without it the content cannot be compared,
 * and the push fails (PostgreSQL retries) rather than take an unknown copy for this one.
 */
export async function hashArchived(storage: StorageBackend, key: string, signal?: AbortSignal): Promise<{sha256: string; sizeBytes: number}> {
  const identityFile = walIdentity()
  if (isEncryptedKey(key) && identityFile === undefined) {
    throw new OperationError(
      `${key} is already archived, encrypted: without AGE_IDENTITY_FILE, wal push cannot compare its content with this file's; ` +
        'set it for the archiver, and the retry confirms the copy (or reports a split-brain). Nothing was overwritten',
    )
  }

  const hash = createHash('sha256')
  let sizeBytes = 0
  async function* countTap(source: AsyncIterable<Buffer>) {
    for await (const chunk of source) {
      sizeBytes += chunk.length
      yield chunk
    }
  }

  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      hash.update(chunk)
      callback()
    },
  })
  await pipeline(await storage.get(key, {signal}), countTap, createObjectDecoder(key, codecOfKey(key) ?? 'gzip', identityFile), sink, {signal})
  return {sha256: hash.digest('hex'), sizeBytes}
}

/**
 * Writes an archived WAL file to `destination`; the restore_command. The file appears under its
 * final name only complete (temp file, fsync, rename), because PostgreSQL replays whatever it
 * finds there. A missing file is a NotFoundError: PostgreSQL asks for files past the end of the
 * archive on purpose, to learn where recovery ends.
 */
export async function fetchWal(
  storage: StorageBackend,
  name: string,
  destination: string,
  options: {signal?: AbortSignal; logger?: Logger; identityFile?: string} = {},
): Promise<{sizeBytes: number}> {
  const identityFile = options.identityFile ?? walIdentity()
  if (!isWalFileName(name)) {
    // PostgreSQL also asks for e.g. `RECOVERYHISTORY` targets by name only; anything else cannot be in the archive.
    throw new NotFoundError(`${name} is not a WAL file name, so it is not in the archive`)
  }

  // Every fetch into a directory tidies it first, also one that then finds nothing (the probes at
  // the start and end of recovery): a killed fetch's leftover goes at the next recovery at the latest.
  const leftovers = await removeDeadFetchesFiles(path.dirname(destination))
  if (leftovers.length > 0) options.logger?.info({event: 'wal.fetch_leftovers_removed', files: leftovers}, `removed ${leftovers.length} temporary file(s) of killed fetches from ${path.dirname(destination)}`)

  // Only a positive "no such object" under every codec's key is NotFoundError (exit 1, "end of the
  // archive" to PostgreSQL); every other failure must abort recovery, so it is never described as
  // absence. The configured codec's key is tried first: one request for what this server archives.
  let found: {key: string; source: NodeJS.ReadableStream & AsyncIterable<unknown>} | undefined
  for (const key of walKeys(name, walCodecOrGzip(), identityFile !== undefined)) {
    const source = await storage.get(key, {signal: options.signal}).catch((error: unknown) => {
      if (isNotFound(error)) return undefined
      throw new OperationError(`reading ${name} from ${storage.location} failed: ${errorMessage(error)}`, {cause: error})
    })
    if (source) {
      found = {key, source}
      break
    }
  }

  if (!found) throw new NotFoundError(`${name} is not in the WAL archive at ${storage.location}`)
  const {key, source} = found
  if (isEncryptedKey(key) && identityFile === undefined) {
    ;(source as unknown as {destroy?: () => void}).destroy?.()
    // Fatal (never "not in archive"): the file is there, this server only cannot read it.
    throw new OperationError(`${name} is archived encrypted (${key}): set AGE_IDENTITY_FILE (or --age-identity-file in restore_command) to the identity of one of its recipients`)
  }

  // This call's own temporary file: two fetches of one name at once (two prefetchers, a prefetcher
  // answering a question about a segment its read-ahead is downloading, or a prefetcher and
  // restore_command) must never write into the same inode, or the first rename would publish a
  // file the second is still writing: PostgreSQL was handed a segment of the wrong size.
  const partial = temporaryFileFor(destination, String(++fetchSequence))
  let sizeBytes = 0
  async function* countTap(source: AsyncIterable<Buffer>) {
    for await (const chunk of source) {
      sizeBytes += chunk.length
      yield chunk
    }
  }

  let untrack = () => {}
  try {
    const temporary = createTrackedTemporaryFile(partial)
    untrack = temporary.untrack
    // A segment is decompressed whole into a file: by igzip writing the file itself
    // (src/compress/file-programs.ts), else by zlib with FILE_CODEC_CHUNK, not its 16 KiB (half
    // the CPU; replay's prefetcher is CPU-bound).
    // fsynced, also in the prefetch queue: a file torn by a power loss must never be served, and
    // PostgreSQL fsyncs each segment it restores (durable_rename), which is cheap once the niced
    // prefetcher wrote it back ahead. Without it replay was faster only with fsync = off
    // (BENCHMARKS.md, "Session 14: replay").
    const codec = codecOfKey(key) ?? 'gzip'
    const decoder = fileDecoderProgram(codec)
    if (decoder) sizeBytes = await decodeIntoFile(source, decoder, isEncryptedKey(key) ? identityFile : undefined, temporary.fd, destination, options.signal)
    else await pipeline(source, createObjectDecoder(key, codec, identityFile, {chunkSize: FILE_CODEC_CHUNK}), countTap, createWriteStream(partial, {fd: temporary.fd, flush: true}), {signal: options.signal})
    // A phase boundary (the crash-point matrix kills here): complete and fsynced, not yet under its final name.
    options.logger?.debug({event: 'wal.fetch_written', wal: name, partial, sizeBytes}, 'written to a temporary file, renaming')
    await fs.rename(partial, destination)
  } catch (error) {
    ;(source as unknown as {destroy?: () => void}).destroy?.() // the temporary file could not be created: the pipeline never took the source
    await fs.rm(partial, {force: true})
    // A wrong identity is a configuration error, said as one; the exit stays fatal (wal fetch maps every failure but absence to 200).
    const wrongIdentity = identityFile && isDamagedStreamError(error) ? identityFailure(errorMessage(error), key, identityFile) : undefined
    if (wrongIdentity) throw wrongIdentity
    throw new OperationError(`fetching ${name} from ${storage.location} failed: ${describeFetchError(error, destination)}`, {cause: error})
  } finally {
    untrack()
  }

  return {sizeBytes}
}

let fetchSequence = 0

/**
 * `source` (decrypted first when `identityFile` is given) decoded by `decoder` straight into `fd`,
 * which is then fsynced and closed, whatever happened; resolves to the bytes written.
 */
async function decodeIntoFile(source: NodeJS.ReadableStream, decoder: FileDecoderSpec, identityFile: string | undefined, fd: number, destination: string, signal?: AbortSignal): Promise<number> {
  try {
    const into = new ProgramIntoFile(decoder, fd, destination)
    await (identityFile === undefined ? pipeline(source, into, {signal}) : pipeline(source, createDecryptor(identityFile), into, {signal}))
    // The decoder wrote through its own descriptor: durable and counted here, as the write stream's flush does on the other path.
    await fsyncFd(fd)
    return (await fstatFd(fd)).size
  } finally {
    await closeFd(fd).catch(() => {})
  }
}

const fsyncFd = promisify(fsync)
const fstatFd = promisify(fstat)
const closeFd = promisify(close)

/** The decoder's errors mean the archived copy is damaged; a file error names the side that failed. */
function describeFetchError(error: unknown, destination: string): string {
  const {code, syscall, path: file} = error as NodeJS.ErrnoException
  if (isDamagedStreamError(error)) return `the archived copy is damaged (${errorMessage(error)}, ${code}); nothing was written to ${destination}`
  if (syscall !== undefined && file !== undefined && file.endsWith('.dbb-partial')) return `writing ${destination}: ${errorMessage(error)}`
  return errorMessage(error)
}

/** The sha256 of a local file, streamed (WAL segments can be up to 1 GiB). */
export async function hashFile(filePath: string): Promise<string> {
  const hash = createHash('sha256')
  for await (const chunk of createReadStream(filePath)) hash.update(chunk as Buffer)
  return hash.digest('hex')
}
