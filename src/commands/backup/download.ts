import * as fs from 'node:fs'
import {Args, Flags} from '@oclif/core'

import {DbbCommand} from '../../base-command'
import {downloadBackup} from '../../backup/download'
import {resolveBackup} from '../../backup/metadata'
import {Section} from '../../config'
import {prepareDecryption} from '../../encrypt/age'
import {ENCRYPTED_SUFFIX, isEncryptedKey} from '../../encrypt/recipients'
import {UsageError} from '../../errors'
import {formatBytes} from '../../format'
import {createProgress} from '../../progress'
import {settingFlagsFor} from '../../settings'

export default class BackupDownload extends DbbCommand<typeof BackupDownload> {
  static override summary = 'Download a backup to a file or stdout, verifying its sha256 on the way.'
  static override description =
    'Streams the dump from storage. A file is written under a temporary name and renamed only when its size and sha256 match the metadata; on a mismatch nothing is left behind and the exit code is 1. With -o - the bytes go to stdout (the exit code still reports a mismatch).'

  static override examples = [
    {description: 'The newest backup, into the current directory', command: '<%= config.bin %> <%= command.id %> latest'},
    {
      description: 'Restore with stock tools',
      command: '<%= config.bin %> <%= command.id %> latest -o - | gunzip | psql --single-transaction -d app_copy',
    },
    {
      description: 'The same for a zstd backup (COMPRESSION=zstd, ids ending in .zst)',
      command: '<%= config.bin %> <%= command.id %> backup_20261121T030000Z.sql.zst -o - | zstd -dc | psql --single-transaction -d app_copy',
    },
    {
      description: 'An encrypted backup (ENCRYPTION_RECIPIENTS, ids ending in .age), decrypted with AGE_IDENTITY_FILE on the way',
      command: 'AGE_IDENTITY_FILE=key.txt <%= config.bin %> <%= command.id %> latest --decrypt -o - | gunzip | psql --single-transaction -d app_copy',
    },
  ]

  static override args = {
    backup: Args.string({required: true, description: 'A backup id, or "latest".'}),
  }

  static override flags = {
    ...settingFlagsFor('backup download'),
    output: Flags.string({char: 'o', summary: 'File to write, or - for stdout (default: the backup id in the current directory).'}),
    force: Flags.boolean({summary: 'Overwrite the output file if it exists.'}),
    decrypt: Flags.boolean({
      summary: 'For an encrypted backup (id ending in .age): write it decrypted (still compressed) with AGE_IDENTITY_FILE; the default file name drops .age.',
    }),
  }

  static override configSections: readonly Section[] = ['storageBackend', 'decryption']
  static override usesStorage = true

  public async run(): Promise<{id: string; file: string | null; sizeBytes: number; sha256: string}> {
    const storage = await this.openStorage()
    try {
      const backup = await resolveBackup(storage, this.args.backup)
      const decrypt = this.flags.decrypt && isEncryptedKey(backup.id)
      const toStdout = this.flags.output === '-'
      const file = toStdout ? undefined : (this.flags.output ?? (decrypt ? backup.id.slice(0, -ENCRYPTED_SUFFIX.length) : backup.id))
      if (file && fs.existsSync(file) && !this.flags.force) {
        throw new UsageError(`${file} already exists (use --force to overwrite, or -o to choose another file)`)
      }

      if (toStdout && this.jsonEnabled()) throw new UsageError('--json cannot be combined with -o - (both write to stdout)')
      // The identity must open it before a byte is written.
      const decryptWith = decrypt ? await prepareDecryption(storage, backup.id, this.settings.decryption.identityFile, this.interruptSignal()) : undefined
      const progress = createProgress({label: `downloading ${backup.id}`, logger: this.logger, event: 'download.progress'})
      const result = await downloadBackup(storage, backup, file ? {file} : {stream: process.stdout}, {
        signal: this.interruptSignal(),
        onProgress: (bytes) => progress.update(bytes),
        decryptWith,
      })
      progress.finish()
      if (file) this.log(`Downloaded ${backup.id} to ${file} (${formatBytes(result.sizeBytes)}, sha256 verified${decryptWith ? ', decrypted' : ''})`)
      return {id: backup.id, file: file ?? null, ...result}
    } finally {
      await storage.close?.()
    }
  }
}
