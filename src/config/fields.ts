import {Cron} from 'croner'
import {z} from 'zod'

import {parseDuration} from '../duration'
import {parseRecipients} from '../encrypt/recipients'
import {SETTINGS, SettingName, declaration} from '../settings'

/**
 * Field schemas for the declarations in src/settings.ts (each entry's `value` receives this
 * module), and how a config section reads declared settings. Values arrive as strings (env or
 * flag); blank ones were dropped.
 */

export {z} from 'zod'

export const intInRange = (min: number, max: number) =>
  z
    .string()
    .regex(/^\d+$/, {message: `must be a whole number from ${min} to ${max}`})
    .transform(Number)
    .pipe(z.number().int().min(min, {message: `must be at least ${min}`}).max(max, {message: `must be at most ${max}`}))

export const duration = z.string().transform((text, ctx) => {
  const milliseconds = parseDuration(text)
  if (milliseconds === undefined || milliseconds <= 0) {
    ctx.addIssue({code: 'custom', message: `"${text}" is not a duration (use e.g. 24h, 30m, PT24H, P1D)`})
    return z.NEVER
  }

  return milliseconds
})

/**
 * The shortest time between two scheduled backups. A backup takes seconds to hours: anything more
 * frequent is a typo (`1ms` for `1m`, a cron with a seconds field) that would start backups back to
 * back, load the database and fill the storage. Declared once, for intervals and cron expressions.
 */
export const MIN_SCHEDULE_INTERVAL_MS = 60_000

/** A duration between scheduled runs: at least MIN_SCHEDULE_INTERVAL_MS. */
export const scheduleInterval = duration.refine((milliseconds) => milliseconds >= MIN_SCHEDULE_INTERVAL_MS, {
  message: 'must be at least 1 minute (a backup schedule more frequent than that starts backups back to back; use e.g. 1h or 24h)',
})

/** true/false (also yes/no, 1/0, on/off); z.coerce.boolean would read "false" as true. */
export const boolean = () => z.stringbool({error: 'must be true or false'})

/** ENCRYPTION_RECIPIENTS: age recipients or SSH public keys, each checked (src/encrypt/recipients.ts). */
export const ageRecipients = z.string().transform((text, ctx) => {
  const parsed = parseRecipients(text)
  if ('problem' in parsed) {
    ctx.addIssue({code: 'custom', message: parsed.problem})
    return z.NEVER
  }

  return parsed.recipients
})

/** DB_NAMES as a list, or why it is not one. */
export function parseDatabaseList(text: string): {names: string[] | 'all'} | {problem: string} {
  if (text.trim().toLowerCase() === 'all') return {names: 'all'}
  const names = text.split(',').map((name) => name.trim())
  const invalid = names.find((name) => Buffer.byteLength(name) > 63 || name.includes('\0'))
  const problem = names.some((name) => name === '')
    ? 'has an empty name (write names separated by single commas, e.g. app,billing)'
    : names.some((name) => name.toLowerCase() === 'all')
      ? 'mixes "all" with names (either all, or a list of names)'
      : invalid !== undefined
        ? `"${invalid.slice(0, 70)}" is not a PostgreSQL database name (at most 63 bytes, no NUL)`
        : new Set(names).size === names.length
          ? undefined
          : `names a database twice (${names.find((name, index) => names.indexOf(name) !== index)})`
  return problem === undefined ? {names} : {problem}
}

/** DB_NAMES: a list of database names, or `all`; parsed as a field so its problem is reported with the others'. */
export const databaseList = z.string().transform((text, ctx): string[] | 'all' => {
  const parsed = parseDatabaseList(text)
  if ('names' in parsed) return parsed.names
  ctx.addIssue({code: 'custom', message: parsed.problem})
  return z.NEVER
})

/** NOTIFY_URLS: each comma-separated URL parsed (and its credentials registered as secrets) as a field. */
export const notifyUrls = z.string().transform((value, ctx) => {
  const {parseTargetUrl, splitUrls, TargetUrlError} = require('../notify/targets') as typeof import('../notify/targets')
  const targets: import('../notify/targets').Target[] = []
  splitUrls(value).forEach((entry, index) => {
    try {
      targets.push(parseTargetUrl(entry, index + 1))
    } catch (error) {
      if (!(error instanceof TargetUrlError)) throw error
      ctx.addIssue({code: 'custom', message: error.message})
    }
  })
  return targets
})

export const httpUrl = z.url({protocol: /^https?$/, error: 'must be an http(s) URL'})

export function isTimeZone(zone: string): boolean {
  try {
    new Intl.DateTimeFormat('en', {timeZone: zone})
    return true
  } catch {
    return false
  }
}

/** When a scheduler runs: every interval, or at the times of a cron expression in a time zone. */
export type ScheduleConfig = {kind: 'interval'; intervalMs: number} | {kind: 'cron'; expression: string; timezone?: string}

/**
 * The checks every `X_INTERVAL` / `X_SCHEDULE` pair shares (backups, base backups, drills): not both
 * at once, TZ a real zone (named as TZ's problem, not the cron's), the cron valid. For a section's
 * superRefine; `example` completes the "set only one" message.
 */
export function scheduleIssues(
  data: {interval?: number; cron?: string; timezone?: string},
  names: {interval: string; cron: string; example?: string},
  ctx: z.RefinementCtx,
): void {
  if (data.cron === undefined) return
  if (data.interval !== undefined) {
    ctx.addIssue({code: 'custom', path: [names.cron], message: `cannot be combined with ${names.interval}: set only one${names.example ? ` (${names.example})` : ''}`})
    return
  }

  if (data.timezone !== undefined && !isTimeZone(data.timezone)) {
    ctx.addIssue({code: 'custom', path: ['TZ'], message: 'is not an IANA time zone name'})
    return
  }

  const problem = cronProblem(data.cron, data.timezone)
  if (problem) ctx.addIssue({code: 'custom', path: [names.cron], message: problem})
}

/** The schedule a validated pair means: the cron when set, else the interval (or `fallbackMs`), else none. */
export function scheduleOf(data: {interval?: number; cron?: string; timezone?: string}, fallbackMs?: number): ScheduleConfig | undefined {
  if (data.cron !== undefined) return {kind: 'cron', expression: data.cron.trim(), timezone: data.timezone}
  const intervalMs = data.interval ?? fallbackMs
  return intervalMs === undefined ? undefined : {kind: 'interval', intervalMs}
}

/**
 * Why a cron schedule is refused (croner's syntax: 5 to 7 fields, seconds first when there are 6 or
 * more), or undefined when it is valid: malformed, never firing, or firing more than once a minute.
 */
export function cronProblem(expression: string, timezone: string | undefined): string | undefined {
  let job: Cron | undefined
  try {
    job = new Cron(expression.trim(), {paused: true, timezone})
    if (!job.nextRun()) return 'never fires (no future time matches it)'
  } catch (error) {
    return `is not a cron expression: ${error instanceof Error ? error.message.replace(/^CronPattern: /, '') : String(error)}`
  } finally {
    job?.stop()
  }

  return firesMoreThanOncePerMinute(expression.trim())
    ? 'fires more than once a minute (its seconds field matches several seconds); at most once a minute is allowed, e.g. "0 * * * *" for hourly'
    : undefined
}

/**
 * True when the seconds field (croner reads one when there are 6 or more fields) matches more than
 * one second: then the schedule fires several times within some minute. Decided exactly, not by
 * sampling: the seconds field alone, pinned to one fixed minute a year, fires twice in that minute.
 */
function firesMoreThanOncePerMinute(expression: string): boolean {
  const fields = expression.split(/\s+/)
  if (fields.length < 6) return false
  const probe = new Cron(`${fields[0]} 0 0 1 1 *`, {paused: true, timezone: 'UTC'})
  try {
    const [first, second] = probe.nextRuns(2, new Date('2030-12-31T23:59:59Z'))
    return first !== undefined && second !== undefined && second.getTime() - first.getTime() < MIN_SCHEDULE_INTERVAL_MS
  } finally {
    probe.stop()
  }
}

export interface ConfigSection<T> {
  /** The variables the section reads: what a command needing it must declare as flags. */
  settings: SettingName[]
  schema: z.ZodType<T>
}

type Declared = typeof SETTINGS
type ValueSchema<N extends SettingName> = ReturnType<Declared[N]['value']>
/** What a section sees of a setting: the parsed value, never undefined when it has a default or is required. */
export type SettingValue<N extends SettingName> = Declared[N] extends {default: string} | {required: true}
  ? z.output<ValueSchema<N>>
  : z.output<ValueSchema<N>> | undefined

/**
 * The field of a declared setting: its value schema, with the declared default parsed by that same
 * schema when unset (zod's prefault), or "is required" when unset and required, else optional.
 */
export function settingField(name: SettingName): z.ZodType {
  const {value, default: fallback, required} = declaration(name)
  const schema = value(fieldHelpers()) as z.ZodType<unknown, string>
  if (fallback !== undefined) return schema.prefault(fallback)
  if (required) return z.string({error: 'is required'}).pipe(schema)
  return schema.optional()
}

/**
 * A section: the declared settings it reads, and how they become typed config (`finish` adds
 * cross-field rules and the transform). The schemas and defaults come from src/settings.ts.
 */
export function defineSection<const N extends SettingName, T>(
  names: readonly N[],
  finish: (object: z.ZodType<{[K in N]: SettingValue<K>}>) => z.ZodType<T>,
): ConfigSection<T> {
  const object = z.object(Object.fromEntries(names.map((name) => [name, settingField(name)])))
  return {settings: [...names], schema: finish(object as unknown as z.ZodType<{[K in N]: SettingValue<K>}>)}
}

/** This module, as the declarations' `value` functions receive it. */
function fieldHelpers(): typeof import('./fields') {
  return require('./fields') as typeof import('./fields')
}
