import {createWriteStream} from 'node:fs'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import {randomBytes} from 'node:crypto'
import type {Readable} from 'node:stream'
import {pipeline} from 'node:stream/promises'

import {alreadyExists, assertSafeKey, notFound} from '@dbb/storage-contract'
import type {GetOptions, ListOptions, ObjectInfo, PutOptions, StagedLeftover, StorageBackend, SweepOptions} from '@dbb/storage-contract'

const TEMP_PREFIX = '.tmp-'

/**
 * Objects as files in one directory, keys URL-encoded (`wal/x` is the file `wal%2Fx`). A write goes
 * to `.tmp-<start ms>-<random>-<key>`, is flushed, then linked (no overwrite) or renamed: a reader
 * never sees half an object, and `sweep` finds what a killed writer left.
 */
export class ExampleBackend implements StorageBackend {
  readonly name = 'example'
  readonly location: string

  constructor(private readonly dir: string) {
    this.location = dir
  }

  async put(key: string, body: Readable, options: PutOptions = {}): Promise<{sizeBytes: number}> {
    const final = this.file(key)
    const temp = path.join(this.dir, `${TEMP_PREFIX}${Date.now()}-${randomBytes(6).toString('hex')}-${encodeURIComponent(key)}`)
    try {
      await pipeline(body, createWriteStream(temp, {flush: true}), {signal: options.signal})
      if (options.overwrite === false) {
        await fs.link(temp, final).catch((error: NodeJS.ErrnoException) => {
          throw error.code === 'EEXIST' ? alreadyExists(key) : error
        })
        await fs.unlink(temp)
      } else {
        await fs.rename(temp, final)
      }
    } catch (error) {
      await fs.rm(temp, {force: true})
      throw error
    }

    return {sizeBytes: (await fs.stat(final)).size}
  }

  async get(key: string, options: GetOptions = {}): Promise<Readable> {
    const handle = await fs.open(this.file(key), 'r').catch((error: NodeJS.ErrnoException) => {
      throw error.code === 'ENOENT' ? notFound(key) : error
    })
    return handle.createReadStream({start: options.start, end: options.end, signal: options.signal})
  }

  async stat(key: string): Promise<ObjectInfo | undefined> {
    const stats = await fs.stat(this.file(key)).catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') return undefined
      throw error
    })
    return stats && {key, sizeBytes: stats.size, lastModified: stats.mtime}
  }

  async *list(prefix: string, options: ListOptions = {}): AsyncIterable<ObjectInfo> {
    for (const name of await fs.readdir(this.dir)) {
      if (name.startsWith(TEMP_PREFIX)) continue
      const key = decodeURIComponent(name)
      if (!key.startsWith(prefix) || (options.startAfter !== undefined && key <= options.startAfter)) continue
      const info = await this.stat(key)
      if (info) yield info
    }
  }

  async delete(key: string): Promise<void> {
    await fs.rm(this.file(key), {force: true})
  }

  async health(): Promise<void> {
    await fs.access(this.dir, fs.constants.W_OK).catch(() => {
      throw new Error(`EXAMPLE_DIR ${this.dir} is missing or not writable`)
    })
  }

  async sweep(olderThan: Date, options: SweepOptions = {}): Promise<StagedLeftover[]> {
    const swept: StagedLeftover[] = []
    for (const name of await fs.readdir(this.dir)) {
      if (!name.startsWith(TEMP_PREFIX)) continue
      const [startedText, , ...key] = name.slice(TEMP_PREFIX.length).split('-')
      const started = Number(startedText)
      if (!Number.isFinite(started) || started >= olderThan.getTime()) continue
      const stats = await fs.stat(path.join(this.dir, name)).catch(() => undefined)
      if (!stats) continue
      if (!options.dryRun) await fs.rm(path.join(this.dir, name), {force: true})
      swept.push({key: decodeURIComponent(key.join('-')), startedAt: new Date(started), sizeBytes: stats.size, kind: 'temp file'})
    }

    return swept
  }

  private file(key: string): string {
    assertSafeKey(key)
    return path.join(this.dir, encodeURIComponent(key))
  }
}
