import {Cron} from 'croner'
import {z} from 'zod'

import {parseDuration} from '../duration'
import type {SettingName} from '../settings'

/** Field schemas shared by the config sections. Values arrive as strings (env or flag); blank ones were dropped. */

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

export const requiredText = () => z.string({error: (issue) => (issue.input === undefined ? 'is required' : 'must be text')})

/** true/false (also yes/no, 1/0, on/off); z.coerce.boolean would read "false" as true. */
export const flag = (fallback: boolean) => z.stringbool({error: 'must be true or false'}).default(fallback)

export const httpUrl = z.url({protocol: /^https?$/, error: 'must be an http(s) URL'})

export function isTimeZone(zone: string): boolean {
  try {
    new Intl.DateTimeFormat('en', {timeZone: zone})
    return true
  } catch {
    return false
  }
}

/** Why croner refuses the expression (5 to 7 fields, seconds allowed), or undefined when it is valid. */
export function cronProblem(expression: string, timezone: string | undefined): string | undefined {
  try {
    const job = new Cron(expression.trim(), {paused: true, timezone})
    const next = job.nextRun()
    job.stop()
    return next ? undefined : 'never fires (no future time matches it)'
  } catch (error) {
    return `is not a cron expression: ${error instanceof Error ? error.message.replace(/^CronPattern: /, '') : String(error)}`
  }
}

export interface ConfigSection<T> {
  /** The variables the section reads: what a command needing it must declare as flags. */
  settings: SettingName[]
  schema: z.ZodType<T>
}

/**
 * A section: a zod object keyed by variable name, and how it becomes typed config (`finish`
 * adds cross-field rules and the transform). Its variables are the object's keys, declared once.
 */
export function defineSection<Shape extends z.ZodRawShape, T>(
  shape: Shape,
  finish: (object: z.ZodObject<Shape>) => z.ZodType<T>,
): ConfigSection<T> {
  return {settings: Object.keys(shape) as SettingName[], schema: finish(z.object(shape))}
}
