import pino, {Logger} from 'pino'

import {clearLiveLine} from './live-line'
import {REDACTED, redactSecrets} from './secrets'
import {SETTING_NAMES, setting} from './settings'

export type {Logger} from 'pino'

/**
 * Keys pino censors wherever they appear in a log object (at the top level and one level down).
 * Secrets should never be logged in the first place; this is the second line of defence for an
 * object logged whole (a config, a request). The variable names come from the declarations
 * (every setting with `secret: true`, core and plugin); the rest are the names those secrets
 * carry inside typed config objects and HTTP requests. The third line is by value: every line is
 * scrubbed of every registered secret value before it is written (see src/secrets.ts).
 */
const SECRET_FIELD_NAMES = ['password', 'PGPASSWORD', 'token', 'apiToken', 'secretAccessKey', 'sessionToken', 'webhookUrl', 'authorization']

export function redactedPaths(secretVariables: readonly string[] = coreSecretVariables()): string[] {
  // A plugin's odd variable name would make pino refuse the path; value redaction still covers it.
  const keys = [...new Set([...SECRET_FIELD_NAMES, ...secretVariables])].filter((key) => /^[A-Za-z_$][\w$]*$/.test(key))
  return [...keys.flatMap((key) => [key, `*.${key}`]), 'req.headers.authorization', 'headers.authorization']
}

function coreSecretVariables(): string[] {
  return SETTING_NAMES.map((name) => setting(name)).filter((spec) => spec.secret).map((spec) => spec.env)
}

export interface LoggerOptions {
  format?: 'json' | 'plain'
  level?: string
  /** Where lines go; default stderr, so stdout stays clean for `--json` and `-o -`. */
  destination?: NodeJS.WritableStream | number
  /** Variables declared secret (core and the installed storage plugins); default: core's. */
  secretVariables?: readonly string[]
}

export function createLogger({format, level = 'info', destination = 2, secretVariables}: LoggerOptions = {}): Logger {
  const resolvedFormat = format ?? (process.stderr.isTTY ? 'plain' : 'json')
  const options = {
    level,
    base: {service: 'dbb'},
    redact: {paths: redactedPaths(secretVariables), censor: REDACTED},
    hooks: {streamWrite: redactSecrets},
    timestamp: pino.stdTimeFunctions.isoTime,
  }
  if (resolvedFormat === 'plain') {
    // For people: one line per event, the message alone; warnings and errors add their fields.
    // The full structured events are what LOG_FORMAT=json is for. A progress line is cleared first.
    // Loaded only for a terminal: archive_command runs once per WAL segment, and pino-pretty is ~30 modules.
    const pretty = require('pino-pretty') as typeof import('pino-pretty')
    return pino(
      {...options, hooks: {streamWrite: (line: string) => (clearLiveLine(), redactSecrets(line))}},
      pretty({destination: typeof destination === 'number' ? logDestination(destination) : destination, sync: true, translateTime: 'SYS:HH:MM:ss', hideObject: true, messageFormat: plainMessage}),
    )
  }

  return pino(options, typeof destination === 'number' ? logDestination(destination) : destination)
}

/** Log bytes held while the destination refuses them; lines past it are dropped. */
const UNWRITTEN_LOG_LIMIT = 1024 * 1024

/**
 * A file descriptor as a log destination: written synchronously, so a line is out before the step
 * it reports moves on, and a line that cannot be written never fails the work it reports on. With
 * no 'error' listener, sonic-boom's failed write (ENOSPC when the log file's disk is full, EPIPE
 * when the reader of a pipe went away) threw out of the log call: `dbb wal push` then exited 1
 * after storing the segment, whenever PostgreSQL's stderr was a file on a full disk (Debian's
 * default: logging_collector off, pg_ctlcluster's log file under /var/log), and PostgreSQL retried
 * it for ever while pg_wal grew. So a refused write is kept (at most UNWRITTEN_LOG_LIMIT) and tried
 * again with the next line, and the work goes on; the exit code is what reports the outcome.
 */
function logDestination(fd: number): ReturnType<typeof pino.destination> {
  const stream = pino.destination({dest: fd, sync: true, maxLength: UNWRITTEN_LOG_LIMIT})
  stream.on('error', () => {})
  return stream
}

const ENVELOPE = new Set(['level', 'time', 'msg', 'pid', 'hostname', 'service', 'event'])

function plainMessage(log: Record<string, unknown>, messageKey: string): string {
  const message = String(log[messageKey] ?? '')
  if (typeof log.level !== 'number' || log.level < 40) return message
  const fields = Object.entries(log)
    .filter(([key]) => !ENVELOPE.has(key) && key !== messageKey)
    .map(([key, value]) => `${key}=${typeof value === 'string' ? value : JSON.stringify(value)}`)
  return fields.length === 0 ? message : `${message} (${fields.join(', ')})`
}
