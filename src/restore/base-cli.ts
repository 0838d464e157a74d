import {Config, Flags} from '@oclif/core'
import * as fs from 'node:fs'
import * as path from 'node:path'

import {UsageError} from '../errors'
import type {Logger} from '../logger'
import {createProgress} from '../progress'
import type {StorageBackend} from '../storage/contract'
import {discoverProviders, selectProvider} from '../storage/registry'
import {BaseRestoreOutcome, parseRecoveryTarget, parseTargetTimeline, restoreBaseBackup} from './base'
import {walForegroundFetchCommand} from './recovery-config'

/** The flags `dbb restore --type base` adds to the restore command. */
export interface BaseRestoreFlags {
  pgdata?: string
  force?: boolean
  'target-time'?: string
  'target-lsn'?: string
  'target-name'?: string
  'target-timeline'?: string
  archive?: boolean
  'restore-command'?: string
  [flag: string]: unknown
}

/**
 * The restore_command written for the restored server: this same dbb's sh foreground bin/dbb-wal
 * and its Node (absolute paths, so PostgreSQL's minimal PATH does not matter), the same backend, and the backend's non-secret
 * settings as flags. Secrets (S3 keys) are never written into postgresql.auto.conf: the server
 * must get them from its environment.
 */
export async function defaultRestoreCommand(config: Config, storageBackend: string, flags: Record<string, unknown>, identityFile?: string): Promise<string> {
  const provider = selectProvider(await discoverProviders(config), storageBackend)
  const storageArgs = ['--storage', storageBackend]
  for (const setting of provider.settings) {
    const value = flags[setting.flag]
    if (!setting.secret && typeof value === 'string' && value !== '') storageArgs.push(`--${setting.flag}`, value)
  }

  // Encrypted WAL (ids ending in .age): the server's wal fetch needs the identity. Its path, absolute
  // (the server runs restore_command in pgdata), never the key; the file must be readable by the server's user.
  if (identityFile !== undefined) storageArgs.push('--age-identity-file', path.resolve(identityFile))

  // bin/dbb-wal beside the real bin/run.js (argv[1] may be a symlink such as /usr/local/bin/dbb).
  return walForegroundFetchCommand(process.execPath, path.join(path.dirname(fs.realpathSync(process.argv[1])), 'dbb-wal'), storageArgs)
}

/** `dbb restore --type base …`: everything the command does for a point-in-time restore, so the command only branches here. */
export async function runBaseRestore(context: {
  config: Config
  storage: StorageBackend
  storageBackend: string
  prefix: string
  reference: string
  flags: BaseRestoreFlags
  logger: Logger
  signal: AbortSignal
  log: (line: string) => void
  /** AGE_IDENTITY_FILE: decrypts an encrypted base backup, and goes into restore_command for encrypted WAL. */
  identityFile?: string
}): Promise<BaseRestoreOutcome> {
  const {flags} = context
  if (!flags.pgdata) throw new UsageError('--pgdata is required with --type base (example: --pgdata /var/lib/postgresql/15/main)')
  const target = parseRecoveryTarget({time: flags['target-time'], lsn: flags['target-lsn'], name: flags['target-name']})
  const targetTimeline = parseTargetTimeline(flags['target-timeline'])
  const archiving = flags.archive ? 'inherited' : 'off'
  const restoreCommand = flags['restore-command'] ?? (await defaultRestoreCommand(context.config, context.storageBackend, flags, context.identityFile))
  const progress = createProgress({label: 'restoring base backup', logger: context.logger, event: 'restore.progress'})
  try {
    const outcome = await restoreBaseBackup(context.storage, {
      reference: context.reference,
      pgdata: flags.pgdata,
      force: flags.force,
      target,
      targetTimeline,
      archiving,
      restoreCommand,
      prefix: context.prefix,
      logger: context.logger,
      signal: context.signal,
      identityFile: context.identityFile,
      onProgress: (bytes) => progress.update(bytes),
    })
    progress.finish()
    context.log(`Restored base backup ${outcome.id} into ${outcome.pgdata} (sha256 verified).`)
    context.log(target ? `Recovery target: ${target.kind} ${target.value}, then promote.` : 'Recovery replays all archived WAL, then promotes.')
    if (targetTimeline !== undefined) context.log(`Recovery follows timeline ${targetTimeline}.`)
    context.log(
      archiving === 'off'
        ? `Archiving is off in the restored cluster (archive_mode = 'off' in postgresql.auto.conf), so it never writes into ${context.storage.location}. ` +
            'For a disaster recovery where this cluster becomes the new primary, restore with --archive (or remove that line and restart).'
        : `Archiving is inherited from the backup (--archive): once promoted, this cluster archives its new timeline into the archive as configured.`,
    )
    context.log(`Start PostgreSQL on it to replay WAL (e.g. pg_ctl -D ${outcome.pgdata} start); it fetches WAL with: ${restoreCommand}`)
    return outcome
  } finally {
    progress.finish()
  }
}

/** Flags of `dbb restore` for point-in-time recovery (spread into its flags). */
export const BASE_RESTORE_FLAGS = {
  type: Flags.string({
    options: ['logical', 'base'],
    default: 'logical',
    summary: 'logical: a pg_dump into a database; base: a base backup into --pgdata for point-in-time recovery.',
  }),
  pgdata: Flags.string({summary: '--type base: the data directory to restore into (must be empty unless --force; PostgreSQL stopped).', helpValue: 'DIR'}),
  'target-time': Flags.string({summary: '--type base: replay WAL up to this time (with a zone), then promote.', helpValue: '"2026-11-21 14:30:00+00"'}),
  'target-lsn': Flags.string({summary: '--type base: replay WAL up to this WAL location, then promote.', helpValue: '0/3000060'}),
  'target-name': Flags.string({summary: '--type base: replay WAL up to this restore point (pg_create_restore_point), then promote.', helpValue: 'NAME'}),
  'target-timeline': Flags.string({
    summary: '--type base: the timeline recovery follows: latest (the default: the newest in the archive), current (the base backup\'s), or a number.',
    helpValue: 'latest|current|N',
  }),
  archive: Flags.boolean({
    summary:
      '--type base: keep the backup\'s archiving settings, so the restored cluster archives into the location once promoted (a disaster recovery: it is the new primary). Without it, archive_mode = off: a drill never writes into the archive.',
  }),
  'restore-command': Flags.string({summary: '--type base: the restore_command to write instead of "<this dbb> wal fetch <storage flags> %f %p".'}),
}
