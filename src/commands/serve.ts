import {constants as osConstants} from 'node:os'
import {scheduleLeftoverCleanup} from '../backup/leftovers'
import {DbbCommand} from '../base-command'
import {requireAgeForRecipients} from '../encrypt/age'
import {Section} from '../config'
import {defaultRestoreCommand} from '../restore/base-cli'
import {RunningService, startService} from '../server/service'
import {settingFlagsFor} from '../settings'
import {ARCHIVING_SECTIONS, startArchivingService} from '../wal/sidecar-archiving'
import {startSpoolService} from '../wal/spool-service'

export default class Serve extends DbbCommand<typeof Serve> {
  static override summary = 'Run the sidecar: REST API, scheduled backups, /health, /info and /metrics.'
  static override description = `Starts the HTTP API (Authorization: Bearer <API_TOKEN> on /api/v1/*; /health, /info and /metrics are open) and the scheduler (BACKUP_INTERVAL, or a cron expression in BACKUP_SCHEDULE). At most one backup runs at a time, whether the scheduler or the API started it; each is the same verified backup as "dbb backup run", followed by retention.

On SIGTERM or SIGINT it stops accepting requests, lets a backup in flight finish within SHUTDOWN_GRACE (else aborts it, leaving nothing behind) and exits 0. A second signal aborts the backup at once.`

  static override examples = [
    {
      description: 'Back up every 24 hours into /var/backups/postgres, API on port 8080',
      command:
        'API_TOKEN=$(openssl rand -hex 32) DB_HOST=db DB_NAME=app DB_PASSWORD=… BACKUP_LOCAL_DIR=/var/backups/postgres <%= config.bin %> <%= command.id %>',
    },
    {description: 'Every night at 03:00 Berlin time', command: 'BACKUP_SCHEDULE="0 3 * * *" TZ=Europe/Berlin <%= config.bin %> <%= command.id %>'},
  ]

  static override enableJsonFlag = false
  static override flags = settingFlagsFor('serve')

  static override configSections: readonly Section[] = ['database', 'namePrefix', 'retention', 'storageBackend', 'compression', 'logicalDump', 'server', 'schedule', ...ARCHIVING_SECTIONS, 'walAsync', 'walReadAhead', 'databases', 'drill', 'encryption', 'decryption']
  static override usesStorage = true
  static override stdoutIsReport = true

  public async run(): Promise<void> {
    // Listening from the start: a SIGTERM while the services start (docker stop, a rolling update
    // right after the HTTP server answers) must be a clean shutdown once they are up, not Node's
    // default death by the signal (it exited 143 when it came between "listening" and the end of
    // start-up; secret-settings.e2e caught it under load).
    // A second one before start-up ends (a start-up that hangs on unreachable storage) exits at once.
    let earlySignal: NodeJS.Signals | undefined
    let onSignal = (signal: NodeJS.Signals) => {
      if (earlySignal) process.exit(128 + osConstants.signals[signal])
      earlySignal = signal
      this.logger.info({event: 'shutdown.requested_during_startup', signal}, `received ${signal} while starting: stopping once started (again to exit at once)`)
    }

    const listener = (signal: NodeJS.Signals) => onSignal(signal)
    process.on('SIGTERM', listener)
    process.on('SIGINT', listener)
    // ENCRYPTION_RECIPIENTS without the age program (or one age refuses): exit 2 before the service starts, not at the first backup.
    const {recipients} = this.settings.encryption
    if (recipients) await requireAgeForRecipients(recipients)
    const storage = await this.openStorage()
    let service: RunningService
    // One notifier for the whole service: backups, base backups, checks and WAL (NOTIFY_URLS; off when none).
    const notifier = this.notifier!
    // WAL streaming, base backup schedule and scheduled checks (each off unless configured).
    const archiving = await startArchivingService({config: this.settings, storage, logger: this.logger, notifier}).catch(async (error: unknown) => {
      await storage.close?.()
      throw error
    })
    try {
      service = await startService({
        config: this.settings,
        storage,
        logger: this.logger,
        notifier,
        physicalDrill: {
          restoreCommand: await defaultRestoreCommand(this.config, this.settings.storageBackend, this.flags as Record<string, unknown>),
          storageEnvironment: this.storageEnvironment(),
        },
      })
    } catch (error) {
      await archiving.stop()
      await storage.close?.()
      throw error
    }

    // A killed run's leftovers (e.g. `docker stop` past its grace): now, and once more when a run killed just before this start is surely dead.
    const stopLeftoverCleanup = scheduleLeftoverCleanup(storage, {prefix: this.settings.namePrefix, logger: this.logger})
    // wal push --async: the spool uploader and its /metrics (off unless WAL_SPOOL_DIR is set).
    const spool = startSpoolService({config: {...this.settings.walAsync, ...this.settings.walReadAhead}, storage, logger: this.logger, registry: service.metrics.registry})
    await new Promise<void>((resolve) => {
      let stopping: Promise<void> | undefined
      onSignal = (signal: NodeJS.Signals) => {
        if (!stopping) {
          stopLeftoverCleanup()
          // Archiving first: the service closes the storage that the last WAL uploads still need.
          stopping = Promise.all([archiving.stop(this.settings.server.shutdownGraceMs), spool.stop()])
            .then(() => service.shutdown(`received ${signal}`))
            .then(() => notifier.settle())
            .then(resolve)
          return
        }

        this.logger.warn({event: 'shutdown.forced', signal}, `received ${signal} again: aborting the backup in flight now`)
        service.abortNow(`received ${signal} twice`)
      }

      if (earlySignal) onSignal(earlySignal)
    })
  }
}
