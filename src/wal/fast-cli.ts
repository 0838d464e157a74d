import * as fs from 'node:fs/promises'
import * as path from 'node:path'

import {ConfigError, DbbError, EXIT_FAILURE, EXIT_WAL_FETCH_FATAL, NotFoundError, asConfigError, errorMessage} from '../errors'
import {createLogger} from '../logger'
import type {StorageBackend, StorageProvider} from '../storage/contract'
import {createBackend} from '../storage/registry'
import {SETTING_NAMES, SettingSpec, resolveSettings, setting} from '../settings'
import {fetchWal, pushWal} from './archive'
import {declareNotInArchive} from './fetch-exit'
import {parseWalFetchArgs} from './fetch-args'
import {awaitPrefetcherReady, identityLine, notePrefetchWanted, prefetcherRunning, prefetcherStartedEarly, queueDirFor, queueServed, storageIdentity} from './foreground'
import {prefetch, startPrefetcher, takeQueued, yieldToRecovery} from './prefetch'
import {walFileKind} from './segments'
import {UPLOADER_IDLE_EXIT_MS, ensureUploader, queueWal, runDetachedUploader, takeUploadedMarker} from './spool'

/**
 * The archive_command / restore_command fast path. PostgreSQL runs `dbb wal push` once per
 * segment, so its start-up cost is paid per 16 MiB of WAL: oclif's start (reading every plugin's
 * manifest, the command's flag parser, the hook that discovers storage providers) was most of it.
 * bin/run.js calls this for the exact forms PostgreSQL uses — `wal push [--async] <path>`,
 * `wal fetch [storage flags] <name> <dest>` (src/wal/fetch-args.ts: the form dbb restore writes),
 * and the detached `wal spool-upload` / `wal prefetch` — with settings from the environment and the
 * built-in backends (local, s3) loaded directly; anything else (another flag, --help, --json, a
 * third-party storage plugin) returns undefined and runs through oclif as before. The work is the
 * same library code the oclif commands call; only the start differs. Before this, bin/run.js has
 * already tried the answers that need no config at all (src/wal/foreground.ts).
 */

export type FastInvocation =
  | {command: 'push'; path: string; async: boolean}
  | {command: 'fetch'; name: string; dest: string; overrides?: Record<string, string>}
  | {command: 'spool-upload'; walDir?: string}
  | {command: 'prefetch'; name: string; segmentSize: number}

export function fastInvocation(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): FastInvocation | undefined {
  if (argv[0] === 'wal' && argv[1] === 'fetch') {
    // restore_command as dbb restore writes it carries the storage settings as flags.
    const fetchArgs = parseWalFetchArgs(argv.slice(2))
    if (!fetchArgs || builtInProvider({...env, ...fetchArgs.overrides}.STORAGE_BACKEND) === undefined) return undefined
    return {command: 'fetch', name: fetchArgs.name, dest: fetchArgs.destination, overrides: fetchArgs.overrides}
  }

  if (argv[0] !== 'wal' || builtInProvider(env.STORAGE_BACKEND) === undefined) return undefined
  const rest = argv.slice(2)
  const positional = rest.filter((arg) => !arg.startsWith('-'))
  const flags = rest.filter((arg) => arg.startsWith('-'))
  switch (argv[1]) {
    case 'push': {
      if (positional.length !== 1 || flags.some((flag) => flag !== '--async')) return undefined
      return {command: 'push', path: positional[0], async: flags.includes('--async')}
    }

    case 'prefetch': {
      const segmentSize = Number(positional[1])
      // 0: not known yet (started before the first download): the prefetcher waits for `wanted` to say.
      if (positional.length !== 2 || flags.length > 0 || !Number.isInteger(segmentSize) || segmentSize < 0) return undefined
      return {command: 'prefetch', name: positional[0], segmentSize}
    }

    case 'spool-upload': {
      if (positional.length > 1 || flags.length > 0) return undefined
      return {command: 'spool-upload', walDir: positional[0]}
    }

    default: {
      return undefined
    }
  }
}

function builtInProvider(name: string | undefined): (() => StorageProvider) | undefined {
  switch (name === undefined || name.trim() === '' ? 'local' : name) {
    case 'local': {
      return () => (require('@dbb/storage-local') as {localProvider: StorageProvider}).localProvider
    }

    case 's3': {
      return () => (require('@dbb/storage-s3') as {s3Provider: StorageProvider}).s3Provider
    }

    default: {
      return undefined
    }
  }
}

/** The CLI entry (bin/run.js) a detached uploader is started with. */
export const CLI_ENTRY = path.join(__dirname, '..', '..', 'bin', 'run.js')

/** Runs the invocation; resolves to the exit code, having printed what the oclif command prints. */
export async function runFast(invocation: FastInvocation, givenEnv: NodeJS.ProcessEnv = process.env): Promise<number> {
  const env = invocation.command === 'fetch' && invocation.overrides ? {...givenEnv, ...invocation.overrides} : givenEnv
  let storage: StorageBackend | undefined
  // The common async push: the uploader already stored this segment ahead (src/wal/spool.ts). That
  // answer needs only the spool directory, so it is given before config validation loads zod.
  if (invocation.command === 'push' && invocation.async && env.WAL_SPOOL_DIR?.trim() && (await takeUploadedMarker(path.resolve(env.WAL_SPOOL_DIR), invocation.path))) {
    process.stdout.write(`Already stored by the uploader: ${path.basename(invocation.path)}\n`)
    return 0
  }

  try {
    const {loadConfig} = require('../config') as typeof import('../config')
    // The same resolution the oclif path does (src/settings.ts): X_FILE secrets read, every secret
    // value registered for redaction — only the flags are missing, which fastInvocation rules out.
    const provider = builtInProvider(env.STORAGE_BACKEND)!()
    const settings = resolvedEnvironment([...SETTING_NAMES.map((name) => setting(name)), ...provider.settings], env)
    const config = loadConfig(['logging', 'storageBackend', 'walAsync'], settings)
    const logger = createLogger(config.logging)
    const openStorage = async () => {
      storage = await createBackend(provider, settings, {logger}, `@dbb/storage-${provider.name}`)
      return storage
    }

    switch (invocation.command) {
      case 'push': {
        if (invocation.async) {
          const spoolDir = requireSpoolDir(config.walAsync.spoolDir)
          // Before queueing, whatever its outcome: a full spool fails this push, and only an uploader
          // empties it. After a reboot or a SIGKILL none runs, and a push that failed first would
          // never start one: archiving stalled for good while pg_wal grew.
          await ensureUploader(spoolDir, CLI_ENTRY, path.dirname(path.resolve(invocation.path)))
          const result = await queueWal(invocation.path, {spoolDir, maxSegments: config.walAsync.maxSegments})
          process.stdout.write(`${result.outcome === 'queued' ? 'Queued' : result.outcome === 'uploaded' ? 'Already stored by the uploader:' : 'Already queued (identical)'} ${result.name} in ${spoolDir} (${result.queuedFiles} waiting)\n`)
          return 0
        }

        const backend = await openStorage()
        const result = await pushWal(backend, invocation.path, {logger})
        process.stdout.write(`${result.outcome === 'stored' ? 'Archived' : 'Already archived (identical)'} ${result.name} as ${result.key} in ${backend.location}\n`)
        return 0
      }

      case 'fetch': {
        // restore_command's --age-identity-file (an override): the prefetcher this starts reads it from the environment too.
        if (env.AGE_IDENTITY_FILE) process.env.AGE_IDENTITY_FILE = env.AGE_IDENTITY_FILE
        const backend = await openStorage()
        const {spoolDir, prefetch: prefetchCount} = config.walAsync
        const kind = walFileKind(invocation.name)
        const prefetchDir = spoolDir && prefetchCount > 0 && (kind === 'segment' || kind === 'history') ? queueDirFor(path.resolve(spoolDir), storageIdentity(env)) : undefined
        const queueDir = kind === 'segment' ? prefetchDir : undefined
        // bin/run.js may have started it already, before this process loaded the rest of dbb.
        let prefetcherStarted = prefetcherStartedEarly()
        const startOnce = (name: string, segmentSize: number) => {
          if (prefetcherStarted || !spoolDir) return
          prefetcherStarted = true
          startPrefetcher(CLI_ENTRY, spoolDir, name, segmentSize)
        }

        try {
          // Served only as bin/run.js and bin/dbb-wal serve it: from a queue its live prefetcher published.
          if (!(queueDir && queueServed(queueDir) && (await takeQueued(queueDir, invocation.name, invocation.dest)))) {
            // The first fetch of a recovery (a .history probe, then the first segment): the prefetcher
            // starts now, so its Node start overlaps this download and it is answering bin/dbb-wal by
            // the next request. It learns the segment size from `wanted`, written below once a segment
            // is here, or from the first segment bin/dbb-wal asks it for.
            if (prefetchDir && !prefetcherRunning(prefetchDir)) startOnce(invocation.name, 0)
            await fetchWal(backend, invocation.name, invocation.dest, {logger})
          }

          logger.debug({event: 'wal.fetched', wal: invocation.name}, `restored ${invocation.name}`)
          // A segment's size is the server's wal_segment_size, which names the segments that follow.
          if (queueDir) {
            const segmentSize = (await fs.stat(invocation.dest)).size
            try {
              notePrefetchWanted(queueDir, invocation.name, segmentSize, startOnce)
            } catch (error) {
              logger.debug({event: 'wal.prefetch_not_started', error: errorMessage(error)}, 'the prefetcher could not be told or started')
            }
          }

          return 0
        } catch (error) {
          if (!(error instanceof NotFoundError)) throw error
          logger.debug({event: 'wal.not_found', wal: invocation.name}, error.message)
          declareNotInArchive()
          return error.exitCode
        } finally {
          // The next request goes to bin/dbb-wal, which serves it only from a running prefetcher's queue.
          if (prefetcherStarted && prefetchDir && identityLine(storageIdentity(env)) !== undefined) awaitPrefetcherReady(prefetchDir)
        }
      }

      case 'prefetch': {
        yieldToRecovery()
        const {spoolDir, prefetch: count} = config.walAsync
        if (!spoolDir || count === 0) return 0
        const backend = await openStorage()
        const identity = storageIdentity(env)
        await prefetch({storage: backend, queueDir: queueDirFor(path.resolve(spoolDir), identity), identity, name: invocation.name, count, segmentSize: invocation.segmentSize, logger})
        return 0
      }

      case 'spool-upload': {
        const spoolDir = requireSpoolDir(config.walAsync.spoolDir)
        const controller = new AbortController()
        process.once('SIGTERM', () => controller.abort())
        process.once('SIGINT', () => controller.abort())
        const result = await runDetachedUploader({openStorage, spoolDir, parallel: config.walAsync.parallel, logger, signal: controller.signal, idleExitMs: UPLOADER_IDLE_EXIT_MS, walDir: invocation.walDir})
        if (result) logger.info({event: 'wal.spool_uploader_done', stored: result.stored}, `spool uploader stored ${result.stored} files and is idle; exiting`)
        return 0
      }
    }

    return EXIT_FAILURE
  } catch (error) {
    const known = asConfigError(error) ?? (error instanceof DbbError ? error : undefined)
    const message = known ? known.message : errorMessage(error)
    process.stderr.write(`${message.split('\n').map((line) => `Error: ${line}`).join('\n')}\n`)
    // restore_command: every failure that is not a positive "no such object" is fatal (src/errors.ts).
    if (invocation.command === 'fetch') return EXIT_WAL_FETCH_FATAL
    return known?.exitCode ?? EXIT_FAILURE
  } finally {
    await (storage as StorageBackend | undefined)?.close?.()
  }
}

/** `env` with X_FILE secrets read in; a bad X_FILE is a ConfigError, as on the oclif path. */
function resolvedEnvironment(specs: SettingSpec[], env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const asFlags = Object.fromEntries(specs.map((spec) => [spec.flag, env[spec.env]]))
  const {values, issues} = resolveSettings(specs, asFlags, env)
  if (issues.length > 0) throw new ConfigError(issues)
  const resolved: NodeJS.ProcessEnv = {...env}
  for (const [name, value] of Object.entries(values)) if (value !== undefined) resolved[name] = value
  return resolved
}

function requireSpoolDir(spoolDir: string | undefined): string {
  if (spoolDir) return path.resolve(spoolDir)
  throw new ConfigError([{variable: 'WAL_SPOOL_DIR', message: 'is required by wal push --async (where segments wait for the uploader)', example: '/var/lib/dbb/wal-async'}])
}
