import {randomBytes} from 'node:crypto'
import {WriteStream, createWriteStream} from 'node:fs'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import {Readable, Writable, addAbortSignal} from 'node:stream'
import {pipeline} from 'node:stream/promises'

import {alreadyExists, assertSafeKey, notFound} from '@dbb/storage-contract'
import type {GetOptions, ListOptions, ObjectInfo, PutOptions, StorageBackend} from '@dbb/storage-contract'

/** Suffix of in-progress writes. Listed (so prune can clean up after a crash), never a final name. */
export const PARTIAL_SUFFIX = '.partial'

/**
 * Modes of what the backend creates, whatever the umask. Files: owner read-write, group read
 * (backups hold the whole database: never world-readable). Directories: group read-write and
 * setgid, so files made inside get the directory's group. Who else may read is decided by that
 * group: give the storage directory the group of every user that reads it (PostgreSQL's
 * restore_command runs as the server's user; dbb serve often runs as another uid), see README "local".
 */
export const FILE_MODE = 0o640
export const DIRECTORY_MODE = 0o2770

/**
 * A directory on a local or mounted filesystem. A write goes to `<key>.<random>.partial`, is fsynced,
 * then linked (no overwrite) or renamed to its final name, and the directory is fsynced: a crash at
 * any point leaves either the complete file under its final name or none.
 */
export class LocalBackend implements StorageBackend {
  readonly name = 'local'

  constructor(private readonly root: string) {}

  get location(): string {
    return this.root
  }

  async put(key: string, body: Readable, options: PutOptions = {}): Promise<{sizeBytes: number}> {
    const finalPath = this.resolve(key)
    // Subdirectories (wal/) are made on demand, the root never: a missing root is an unmounted
    // volume, and creating it would archive onto the wrong disk (gone with the container) and exit 0.
    await this.requireRoot()
    await makeDirectories(path.dirname(finalPath)).catch((error: unknown) => {
      throw describeFsError(error, this.root)
    })
    const partialPath = `${finalPath}.${randomBytes(6).toString('hex')}${PARTIAL_SUFFIX}`
    try {
      // `flush` fsyncs the file before it is closed, so the rename below publishes durable bytes.
      // A write error (ENOSPC, EIO) destroys `body` with the same error object, so the producer of
      // the stream reports it first: describe it here, where the directory is known.
      const file = createWriteStream(partialPath, {flags: 'wx', mode: FILE_MODE, flush: true})
      await pipeline(body, describeWriteErrors(file, this.root), {signal: options.signal})
      await fs.chmod(partialPath, FILE_MODE) // the umask may have taken the group's read bit
      if (options.overwrite === false) {
        await fs.link(partialPath, finalPath).catch((error: NodeJS.ErrnoException) => {
          throw error.code === 'EEXIST' ? alreadyExists(key) : error
        })
        await fs.unlink(partialPath)
      } else {
        await fs.rename(partialPath, finalPath)
      }
    } catch (error) {
      await fs.rm(partialPath, {force: true})
      throw describeFsError(error, this.root)
    }

    await fsyncDirectory(path.dirname(finalPath))
    const {size} = await fs.stat(finalPath)
    return {sizeBytes: size}
  }

  async get(key: string, options: GetOptions = {}): Promise<Readable> {
    const filePath = this.resolve(key)
    // Open first so a missing file rejects here, not later as a stream error.
    const handle = await fs.open(filePath, 'r').catch(async (error: NodeJS.ErrnoException) => {
      if (error.code !== 'ENOENT') throw await describeReadError(error, filePath)
      // A missing or unmounted BACKUP_LOCAL_DIR is not "no such object": WAL recovery would end early on it.
      await this.requireRoot()
      throw notFound(key)
    })
    const stream = handle.createReadStream({start: options.start, end: options.end})
    return options.signal ? addAbortSignal(options.signal, stream) : stream
  }

  async stat(key: string): Promise<ObjectInfo | undefined> {
    try {
      const stats = await fs.stat(this.resolve(key))
      return stats.isFile() ? {key, sizeBytes: stats.size, lastModified: stats.mtime} : undefined
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
        await this.requireRoot()
        return undefined
      }

      throw describeFsError(error, this.root, 'reading')
    }
  }

  async *list(prefix: string, options: ListOptions = {}): AsyncIterable<ObjectInfo> {
    // Start from the deepest directory the prefix names, so listing `wal/` does not walk dumps.
    const directoryPart = prefix.includes('/') ? prefix.slice(0, prefix.lastIndexOf('/')) : ''
    const start = directoryPart ? this.resolve(directoryPart) : this.root
    // A missing root is a misconfiguration, not an empty listing: saying "no backups" would hide it.
    await this.requireRoot()
    for await (const key of walk(start, directoryPart, prefix)) {
      if (!key.startsWith(prefix)) continue
      // Skipped before the stat, which is what a listing of a large directory spends its time on.
      if (options.startAfter !== undefined && key <= options.startAfter) continue
      if (options.endBefore !== undefined && key >= options.endBefore) continue
      const info = await this.stat(key)
      if (info) yield info
    }
  }

  async delete(key: string): Promise<void> {
    await fs.rm(this.resolve(key), {force: true}).catch((error: unknown) => {
      throw describeFsError(error, this.root, 'deleting in')
    })
  }

  async health(): Promise<void> {
    const stats = await fs.stat(this.root).catch((error: NodeJS.ErrnoException) => {
      throw new Error(
        error.code === 'ENOENT'
          ? `backup directory ${this.root} does not exist (create it, or set BACKUP_LOCAL_DIR to an existing directory)`
          : `backup directory ${this.root} cannot be read: ${error.code ?? error.message}`,
      )
    })
    if (!stats.isDirectory()) throw new Error(`BACKUP_LOCAL_DIR ${this.root} is not a directory`)
    // access(W_OK) says yes to root even on a read-only mount: prove writability by writing.
    const probe = path.join(this.root, `.dbb-health-${randomBytes(4).toString('hex')}`)
    try {
      await fs.writeFile(probe, '')
      await fs.rm(probe, {force: true})
    } catch (error) {
      throw new Error(`backup directory ${this.root} is not writable: ${(error as NodeJS.ErrnoException).code ?? errorText(error)}`)
    }
  }

  /** Rejects (never as NOT_FOUND) when the root itself is missing or not a directory: a misconfiguration or an unmounted volume. */
  private async requireRoot(): Promise<void> {
    const stats = await fs.stat(this.root).catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') {
        throw Object.assign(new Error(`backup directory ${this.root} does not exist (check BACKUP_LOCAL_DIR)`), {code: 'LOCATION_MISSING'})
      }

      throw describeFsError(error, this.root, 'reading')
    })
    if (!stats.isDirectory()) throw Object.assign(new Error(`BACKUP_LOCAL_DIR ${this.root} is not a directory`), {code: 'LOCATION_MISSING'})
  }

  /** Maps a key to a path inside the root, refusing anything that would resolve outside it. */
  private resolve(key: string): string {
    assertSafeKey(key)
    return path.join(this.root, ...key.split('/'))
  }
}

/** Keys under `directory`; subdirectories that cannot hold a key starting with `prefix` are not entered (listing backups never walks wal/). */
async function* walk(directory: string, relative: string, prefix: string): AsyncIterable<string> {
  let entries
  try {
    entries = await fs.readdir(directory, {withFileTypes: true})
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return
    throw describeFsError(error, directory, 'listing')
  }

  for (const entry of entries) {
    if (entry.name.startsWith('.dbb-health-')) continue
    const key = relative ? `${relative}/${entry.name}` : entry.name
    if (entry.isDirectory()) {
      if (`${key}/`.startsWith(prefix) || prefix.startsWith(`${key}/`)) yield* walk(path.join(directory, entry.name), key, prefix)
    } else if (entry.isFile()) yield key
  }
}

/**
 * The file stream, its errors described (which directory, which errno) before anything else sees
 * them. Finishes only once the file is flushed (fsync) and closed, so the link that follows
 * publishes durable bytes.
 */
function describeWriteErrors(file: WriteStream, root: string): Writable {
  let failure: Error | undefined
  file.on('error', (error) => (failure ??= describeFsError(error, root) as Error))
  return new Writable({
    write(chunk: Buffer, _encoding, callback) {
      file.write(chunk, (error) => callback(error ? (failure ?? (describeFsError(error, root) as Error)) : undefined))
    },
    final(callback) {
      file.once('close', () => callback(failure))
      file.end()
    },
    destroy(error, callback) {
      file.destroy()
      callback(error)
    },
  })
}

/** mkdir -p, giving each directory it creates DIRECTORY_MODE (mkdir's mode is cut by the umask; chmod's is not). */
async function makeDirectories(directory: string): Promise<void> {
  const firstCreated = await fs.mkdir(directory, {recursive: true})
  if (firstCreated === undefined) return
  for (let current = directory; ; current = path.dirname(current)) {
    await fs.chmod(current, DIRECTORY_MODE)
    if (current === firstCreated || current === path.dirname(current)) break
  }
}

async function fsyncDirectory(directory: string): Promise<void> {
  const handle = await fs.open(directory, 'r')
  try {
    await handle.sync()
  } finally {
    await handle.close()
  }
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error)
}

/**
 * A file that exists but cannot be opened for reading, in words that lead to the fix: which file,
 * its owner and mode, and who tried. Typical: archived WAL stored by `dbb serve` as another user
 * and read by restore_command as the server's user (files are 0640: the reader needs the group).
 */
async function describeReadError(error: NodeJS.ErrnoException, filePath: string): Promise<unknown> {
  if (error.code !== 'EACCES' && error.code !== 'EPERM') return describeFsError(error, path.dirname(filePath), 'reading')
  const owner = await fs.stat(filePath).catch(() => undefined)
  const who = `uid ${process.getuid?.() ?? '?'} (gid ${process.getgid?.() ?? '?'}, groups ${process.getgroups?.().join(',') ?? '?'})`
  const file = owner ? `owner uid ${owner.uid}, group ${owner.gid}, mode ${(owner.mode & 0o777).toString(8).padStart(4, '0')}` : 'owner unknown'
  const fix = owner
    ? `make it readable by this user: put this user in group ${owner.gid}, or let dbb store files with a group this user has ` +
      `(chgrp -R <group> ${path.dirname(filePath)} && chmod g+s on the directories; Docker: run dbb with user "<uid>:<server's gid>"; ` +
      'Kubernetes: securityContext.fsGroup), or run this command as the user that stored it'
    : 'check the permissions of the directories above it'
  return Object.assign(new Error(`permission denied reading ${filePath} (${file}) as ${who} (${error.code}): ${fix}`), {code: error.code, cause: error})
}

/** Filesystem errors in words: which directory, what dbb was doing, and the errno an operator can search for. */
function describeFsError(error: unknown, root: string, doing: 'writing to' | 'reading' | 'listing' | 'deleting in' = 'writing to'): unknown {
  const code = (error as NodeJS.ErrnoException | undefined)?.code
  const messages: Record<string, string> = {
    ENOSPC: `no space left on the device holding ${root}`,
    EACCES: `permission denied ${doing} ${root}`,
    EPERM: `operation not permitted ${doing} ${root}`,
    EROFS: `${root} is on a read-only filesystem`,
    EDQUOT: `disk quota exceeded in ${root}`,
  }
  if (code && messages[code]) return Object.assign(new Error(`${messages[code]} (${code})`), {code, cause: error})
  return error
}
