import pino, {Logger} from 'pino'

export type {Logger} from 'pino'

/**
 * Paths pino censors wherever they appear in a log object. Secrets should never be logged in the
 * first place; this is the second line of defence for an object logged whole (a config, a request).
 */
export const REDACTED_PATHS = [
  'password',
  '*.password',
  'DB_PASSWORD',
  '*.DB_PASSWORD',
  'PGPASSWORD',
  '*.PGPASSWORD',
  'API_TOKEN',
  '*.API_TOKEN',
  'token',
  '*.token',
  'AWS_SECRET_ACCESS_KEY',
  '*.AWS_SECRET_ACCESS_KEY',
  'secretAccessKey',
  '*.secretAccessKey',
  'SLACK_TOKEN',
  '*.SLACK_TOKEN',
  'req.headers.authorization',
  'headers.authorization',
]

export interface LoggerOptions {
  format?: 'json' | 'plain'
  level?: string
  /** Where lines go; default stderr, so stdout stays clean for `--json` and `-o -`. */
  destination?: NodeJS.WritableStream | number
}

export function createLogger({format, level = 'info', destination = 2}: LoggerOptions = {}): Logger {
  const resolvedFormat = format ?? (process.stderr.isTTY ? 'plain' : 'json')
  const options = {
    level,
    base: {service: 'dbb'},
    redact: {paths: REDACTED_PATHS, censor: '[redacted]'},
    timestamp: pino.stdTimeFunctions.isoTime,
  }
  if (resolvedFormat === 'plain') {
    // Loaded only for a terminal: archive_command runs once per WAL segment, and pino-pretty is ~30 modules.
    const pretty = require('pino-pretty') as typeof import('pino-pretty')
    return pino(options, pretty({destination, sync: true, ignore: 'pid,hostname,service', translateTime: 'SYS:HH:MM:ss'}))
  }

  return pino(options, typeof destination === 'number' ? pino.destination({dest: destination, sync: true}) : destination)
}
