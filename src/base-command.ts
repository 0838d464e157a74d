import {Command, Errors, Interfaces} from '@oclif/core'
import {writeSync} from 'node:fs'

import {Config, Section, loadConfig} from './config'
import {ConfigError, ConfigIssue, DbbError, EXIT_FAILURE, EXIT_USAGE, asConfigError, errorMessage} from './errors'
import {Logger, createLogger} from './logger'
import {fileVariable, redactSecrets} from './secrets'
import type {NotificationEvent} from './notify/events'
import {Notifier} from './notify/notifier'
import type {StorageBackend, StorageSetting} from './storage/contract'
import {ProviderRegistry, allProviderSettings, createBackend, discoverProviders, selectProvider} from './storage/registry'
import {EVERY_COMMAND, SETTING_NAMES, SettingSpec, resolveSettings, setting, settingFlagsFor, specToFlag} from './settings'
import {misspeltSettings} from './settings-typos'

export type CommandFlags<T extends typeof Command> = Interfaces.InferredFlags<(typeof DbbCommand)['baseFlags'] & T['flags']>
export type CommandArgs<T extends typeof Command> = Interfaces.InferredArgs<T['args']>

/**
 * What every dbb command shares: `--json`, the logging flags, validated config for the sections a
 * command declares, the selected storage backend (with the flags installed backend plugins add),
 * Ctrl-C as an abort signal, and one `catch()` that turns any failure into a clean message and a
 * defined exit code (1 failed, 2 bad usage or config) — never a stack trace.
 */
export abstract class DbbCommand<T extends typeof Command> extends Command {
  static override enableJsonFlag = true
  static override baseFlags = settingFlagsFor(EVERY_COMMAND)
  /** Config sections this command validates at start. */
  static configSections: readonly Section[] = []
  /** Whether the command opens the storage backend (and so accepts the backends' flags). */
  static usesStorage = false
  /**
   * When set, every failure exits with this code instead of its own (1 or 2): for commands whose
   * caller reads exit codes its own way (wal fetch: PostgreSQL's restore_command, see src/errors.ts).
   */
  static failureExitCode?: number
  /**
   * Whether the command's stdout (without `--json`) is a report on work it does — a backup stored,
   * segments archived, a database restored — rather than what was asked for (a listing, a dump).
   * Read through stdoutIsReport(), which a command with listing modes overrides (restore).
   */
  static stdoutIsReport = false

  protected flags!: CommandFlags<T>
  protected args!: CommandArgs<T>
  protected settings!: Config
  protected logger!: Logger
  private registry?: ProviderRegistry
  private storage?: StorageBackend
  private storageSettings: StorageSetting[] = []
  private settingValues: Record<string, string | undefined> = {}
  /** The notification layer, for commands that declare the 'notify' section (src/notify). */
  protected notifier?: Notifier

  public override async init(): Promise<void> {
    await super.init()
    const ctor = this.ctor as typeof DbbCommand
    if (ctor.usesStorage) {
      this.registry = await discoverProviders(this.config)
      this.storageSettings = allProviderSettings(this.registry)
    }

    // Backend plugins declare their settings at runtime; they become flags of this command here.
    const storageFlags = Object.fromEntries(this.storageSettings.map((spec) => [spec.flag, specToFlag(spec, 'STORAGE')]))
    const {args, flags} = await this.parse({
      ...ctor,
      flags: {...ctor.flags, ...storageFlags},
      baseFlags: ctor.baseFlags,
      enableJsonFlag: ctor.enableJsonFlag,
      args: ctor.args,
    } as Interfaces.Input<Record<string, unknown>, Record<string, unknown>, Record<string, unknown>>)
    this.flags = flags as CommandFlags<T>
    this.args = args as CommandArgs<T>
    this.handleUnwritableOutput()

    const known: SettingSpec[] = [...SETTING_NAMES.map((name) => setting(name)), ...this.storageSettings]
    // Core settings and the backend's settings are validated together: one report with every problem.
    const resolved = resolveSettings(known, flags)
    this.settingValues = resolved.values
    const issues: ConfigIssue[] = [...resolved.issues]
    try {
      this.settings = loadConfig(['logging', ...ctor.configSections], this.settingValues) as Config
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error
      issues.push(...error.issues)
    }

    this.logger = createLogger({...this.settings?.logging, format: this.logFormat(), secretVariables: known.filter((spec) => spec.secret).map((spec) => spec.env)})
    this.registry?.problems.forEach((problem) => this.logger.warn({event: 'storage.plugin_problem'}, problem))
    for (const {variable, suggestion} of misspeltSettings(process.env, [...known.map((spec) => spec.env), ...known.filter((spec) => spec.secret).map((spec) => fileVariable(spec.env))])) {
      this.logger.warn({event: 'setting.misspelt', variable, suggestion}, `${variable} is not a dbb setting and is ignored; did you mean ${suggestion}?`)
    }

    if (this.registry) {
      try {
        const provider = selectProvider(this.registry, this.settings?.storageBackend ?? this.settingValues.STORAGE_BACKEND?.trim().toLowerCase() ?? 'local')
        this.storage = await createBackend(provider, this.settingValues, {logger: this.logger}, this.registry.plugins.get(provider.name))
      } catch (error) {
        const configError = asConfigError(error)
        if (!configError) throw error
        issues.push(...configError.issues)
      }
    }

    if (issues.length > 0) throw new ConfigError(issues)
    if (this.settings.notify) this.notifier = new Notifier(this.settings.notify, this.logger)
  }

  /**
   * What happens when stdout or stderr cannot be written (appended to a log on a full disk, as cron
   * jobs often do; a pipe whose reader went away). oclif's listener on stdout swallows EPIPE and
   * rethrows the rest as an uncaught exception: ENOSPC threw after a backup was stored and exited 1,
   * with a stack trace. It is replaced here (nothing else listens this early):
   *  - a report (stdoutIsReport, without --json) that cannot be written is dropped: cron, CI and
   *    PostgreSQL read the exit code, which already says how the work went;
   *  - what was asked for (--json, a listing, download -o -) fails the command: exit 1 and one
   *    `Error:` line on stderr (a reader that went away, EPIPE, is `dbb backup list | head`: quiet);
   *  - stderr carries no data: a failed write there is dropped (the logger's own: src/logger.ts).
   */
  private handleUnwritableOutput(): void {
    const report = !this.jsonEnabled() && this.stdoutIsReport()
    let reported = false
    process.stdout.removeAllListeners('error').on('error', (error: NodeJS.ErrnoException) => {
      if (report || error.code === 'EPIPE') return
      process.exitCode = EXIT_FAILURE
      if (reported) return
      reported = true
      try {
        writeSync(2, `Error: the output could not be written to stdout: ${errorMessage(error)}\n`)
      } catch {
        // stderr is gone too: the exit code says it.
      }
    })
    process.stderr.removeAllListeners('error').on('error', () => {})
  }

  /** Whether this invocation's stdout is a report (static stdoutIsReport); a command with modes that list overrides it. */
  protected stdoutIsReport(): boolean {
    return (this.ctor as typeof DbbCommand).stdoutIsReport
  }

  /** Tells people (NOTIFY_URLS): returns at once, never throws; the command waits for deliveries at exit (see finally). */
  protected notify(event: NotificationEvent): void {
    this.notifier?.emit(event)
  }

  /**
   * Deliveries still in flight get at most NOTIFY_TIMEOUT after the command's work is done; then
   * the command exits with the code its work earned. A notification never changes it.
   */
  public override async finally(error: Error | undefined): Promise<unknown> {
    const exitCode = process.exitCode
    await this.notifier?.settle()
    process.exitCode = exitCode
    return super.finally(error)
  }

  /** The backend STORAGE_BACKEND names, validated at start. */
  protected async openStorage(): Promise<StorageBackend> {
    if (!this.storage) throw new Error(`${this.id} does not declare usesStorage`)
    return this.storage
  }

  /**
   * The selected storage backend's settings as environment variables (secrets included, however
   * they were given): for a child that must reach the same storage itself, such as the private
   * server of a physical drill running `dbb wal fetch`. Never for any other child.
   */
  protected storageEnvironment(): Record<string, string> {
    const env: Record<string, string> = {}
    for (const spec of this.storageSettings) {
      const value = this.settingValues[spec.env]
      if (value !== undefined && value !== '') env[spec.env] = value
    }

    const backend = this.settingValues.STORAGE_BACKEND
    if (backend) env.STORAGE_BACKEND = backend
    return env
  }

  /**
   * `--json` output. oclif's own logJson colours the JSON by running a regex tokenizer over it
   * even when stdout is a pipe, where no colour is shown: ≈ 100 ms of the 1.1 s `backup list --json`
   * of 1,000 backups (BENCHMARKS.md, "Session 8"). A program reading the output gets the same
   * text, `JSON.stringify` with two spaces, without that work; a terminal keeps oclif's colours.
   */
  public override logJson(json: unknown): void {
    if (process.stdout.isTTY) {
      super.logJson(json)
      return
    }

    process.stdout.write(`${JSON.stringify(json, null, 2)}\n`)
  }

  /** Aborts on Ctrl-C or SIGTERM, so long work stops and cleans up instead of dying half-way. */
  protected interruptSignal(): AbortSignal {
    const controller = new AbortController()
    const onSignal = (signal: NodeJS.Signals) => {
      if (controller.signal.aborted) process.exit(130)
      this.logger?.warn({event: 'interrupted', signal}, `received ${signal}, stopping and cleaning up`)
      controller.abort()
    }

    process.once('SIGINT', onSignal)
    process.once('SIGTERM', onSignal)
    return controller.signal
  }

  public override async catch(error: Error & {exitCode?: number}): Promise<unknown> {
    // Deliveries first (bounded, see finally): the command.failed event stays the last line of a failed run.
    await this.notifier?.settle()
    const configError = asConfigError(error)
    const known = configError ?? (error instanceof DbbError ? error : undefined)
    const {failureExitCode} = this.ctor as typeof DbbCommand
    // oclif's own errors (unknown flag, missing argument) already carry exit code 2 and a hint.
    // (A command with its own failure code — wal fetch: PostgreSQL's restore_command — maps those too.)
    const oclifError = known === undefined && (error instanceof Errors.CLIError || isOclifError(error))
    if (oclifError && failureExitCode === undefined) {
      error.message = redactSecrets(error.message)
      // oclif's catch takes the exit code from `error.exitCode` (else 1), but its parse errors carry it in `oclif.exit`:
      // without this, `--json` turned every usage error into exit 1 while its JSON said 2.
      process.exitCode = (error as {oclif?: {exit?: number}}).oclif?.exit ?? EXIT_USAGE
      if (this.jsonEnabled() || this.logFormat() !== 'json') return super.catch(error)
    }

    const exit = failureExitCode ?? (oclifError ? ((error as {oclif?: {exit?: number}}).oclif?.exit ?? EXIT_USAGE) : (known?.exitCode ?? EXIT_FAILURE))
    const code = oclifError ? 'USAGE' : (known?.code ?? 'FAILED')
    // A secret's value inside any error text (a plugin's exception, a driver's message) is replaced.
    const message = redactSecrets(known ? known.message : errorMessage(error))
    process.exitCode = exit
    if (this.jsonEnabled()) {
      this.logJson({error: code, message, exitCode: exit})
    } else {
      // Printed as is, not through oclif's renderer, which wraps at 80 columns: one problem per line, greppable in logs.
      // (oclif's own messages are one error and a hint: only the first line is the error.)
      const lines = message.split('\n').map((line, index) => (oclifError && index > 0 ? line : `Error: ${line}`))
      process.stderr.write(`${lines.join('\n')}\n`)
      this.logFailureEvent({code, message, exit, issues: configError?.issues})
    }

    return undefined
  }

  /**
   * With JSON logs, a failed run ends with one `command.failed` event (after any event of the
   * operation itself), so a log pipeline sees every failure — a bad setting before the logger
   * existed included — and its exit code, not only a plain `Error:` line.
   */
  private logFailureEvent(failure: {code: string; message: string; exit: number; issues?: ConfigIssue[]}): void {
    if (this.logFormat() !== 'json') return
    const logger = this.logger ?? createLogger({format: 'json'})
    logger.error(
      {event: 'command.failed', command: this.id?.replaceAll(':', ' '), error: failure.code, exitCode: failure.exit, ...(failure.issues ? {issues: failure.issues} : {})},
      failure.message,
    )
  }

  /** The log format in effect, also when the settings failed to load (then LOG_FORMAT as given, if valid). */
  private logFormat(): 'json' | 'plain' {
    const given = this.settings?.logging?.format ?? (this.settingValues.LOG_FORMAT ?? process.env.LOG_FORMAT)?.trim()
    if (given === 'json' || given === 'plain') return given
    return process.stderr.isTTY ? 'plain' : 'json'
  }

  protected override toErrorJson(error: unknown): unknown {
    return {error: 'USAGE', message: redactSecrets(errorMessage(error)), exitCode: (error as {oclif?: {exit?: number}}).oclif?.exit ?? 2}
  }
}

function isOclifError(error: unknown): boolean {
  return typeof error === 'object' && error !== null && 'oclif' in error
}
