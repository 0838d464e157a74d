import {Flags} from '@oclif/core'

import {DbbCommand} from '../../base-command'
import {runBaseBackup} from '../../backup/base-backup'
import {BackupOutcome, runLogicalBackup} from '../../backup/run-backup'
import {StreamProgress} from '../../backup/pipeline'
import {formatBytes} from '../../format'
import {createProgress} from '../../progress'
import {Section} from '../../config'
import {settingFlags} from '../../settings'

export default class BackupRun extends DbbCommand<typeof BackupRun> {
  static override summary = 'Take a backup now — logical (pg_dump of DB_NAME, the default) or --type base (pg_basebackup of the cluster) — verified, then apply retention.'
  static override description = `Streams pg_dump (owners and privileges included unless BACKUP_NO_OWNER=true; the database's own properties and the roles the dump names are recorded in the sidecar) through gzip (or zstd with COMPRESSION=zstd) into the storage backend without a temporary file, checks the compressed stream by decompressing it as it is sent, reads the stored dump back to verify its size and sha256, and only then writes the <id>.meta.json sidecar that makes the backup exist. A failure or Ctrl-C removes what was written. Restore with stock tools: gunzip -c <id>.sql.gz | psql, or zstd -dc <id>.sql.zst | psql.

With --type base, pg_basebackup of the whole cluster is streamed the same way, for point-in-time recovery with archived WAL (dbb wal push).`

  static override examples = [
    {
      description: 'Back up the database "app" into /var/backups/postgres',
      command: 'DB_HOST=localhost DB_NAME=app DB_USER=postgres DB_PASSWORD=… BACKUP_LOCAL_DIR=/var/backups/postgres <%= config.bin %> <%= command.id %>',
    },
    {description: 'Machine-readable result, no retention', command: '<%= config.bin %> <%= command.id %> --json --no-prune'},
  ]

  static override flags = {
    ...settingFlags('DB_HOST', 'DB_PORT', 'DB_NAME', 'DB_USER', 'DB_PASSWORD', 'BACKUP_NAME_PREFIX'),
    ...settingFlags('RETENTION_DAYS', 'BACKUPS_TO_RETAIN', 'ORPHAN_GRACE', 'STORAGE_BACKEND'),
    ...settingFlags('BASE_BACKUP_WAL_METHOD', 'BASE_BACKUP_CHECKPOINT'),
    ...settingFlags('COMPRESSION', 'COMPRESSION_LEVEL', 'COMPRESSION_THREADS', 'BACKUP_NO_OWNER'),
    type: Flags.string({
      options: ['logical', 'base'],
      default: 'logical',
      summary: 'logical: pg_dump of DB_NAME; base: pg_basebackup of the whole cluster, for point-in-time recovery with archived WAL.',
    }),
    prune: Flags.boolean({
      allowNo: true,
      default: true,
      summary: 'Apply retention after a successful backup (--no-prune to skip).',
    }),
  }

  static override configSections: readonly Section[] = ['database', 'namePrefix', 'retention', 'storageBackend', 'baseBackup', 'compression', 'logicalDump']
  static override usesStorage = true

  public async run(): Promise<BackupOutcome> {
    const storage = await this.openStorage()
    const progress = createProgress({label: 'backing up', logger: this.logger, event: 'backup.progress'})
    try {
      const deps = {
        database: this.settings.database,
        storage,
        namePrefix: this.settings.namePrefix,
        retention: this.settings.retention,
        logger: this.logger,
        compression: this.settings.compression,
        logicalDump: this.settings.logicalDump,
      }
      const options = {
        triggeredBy: 'cli' as const,
        prune: this.flags.prune,
        signal: this.interruptSignal(),
        onProgress: ({sourceBytes, storedBytes}: StreamProgress) => progress.update(sourceBytes, {storedBytes}),
      }
      const outcome =
        this.flags.type === 'base'
          ? await runBaseBackup({...deps, baseBackup: this.settings.baseBackup}, options)
          : await runLogicalBackup(deps, options)
      progress.finish()
      const {metadata, pruned, pruneError} = outcome
      this.log(`Backup ${metadata.id} stored in ${storage.location}`)
      this.log(`  size ${formatBytes(metadata.sizeBytes)} (${formatBytes(metadata.uncompressedBytes ?? 0)} of ${metadata.type === 'base' ? 'tar' : 'SQL'}), sha256 ${metadata.sha256}`)
      if (metadata.type === 'base') {
        this.log(`  took ${(metadata.durationMs / 1000).toFixed(1)} s, PostgreSQL ${metadata.pgVersion}, timeline ${metadata.timeline}`)
        this.log(`  WAL ${metadata.startLsn} → ${metadata.stopLsn}; point-in-time restores need archived WAL from ${metadata.firstWalSegment} on`)
      } else {
        this.log(`  took ${(metadata.durationMs / 1000).toFixed(1)} s, PostgreSQL ${metadata.pgVersion}, pg_dump ${metadata.pgDumpVersion}`)
      }
      if (pruned && pruned.deleted.length > 0) this.log(`  retention removed ${pruned.deleted.map((entry) => entry.id).join(', ')}`)
      if (pruneError) this.warn(`retention could not finish (the backup itself succeeded): ${pruneError}`)
      return outcome
    } finally {
      progress.finish()
      await storage.close?.()
    }
  }
}
