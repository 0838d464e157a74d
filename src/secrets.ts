import {readFileSync} from 'node:fs'

import {passfileProblem} from './db/pgpass'
import type {ConfigIssue} from './errors'

/**
 * The secret values this process knows: every setting declared `secret: true` (core or a storage
 * plugin's), and the database password however it was found (PGPASSWORD, a pgpass line). The
 * logger and the base command's error output replace each one wherever it appears — in a log
 * line, an error message, a plugin's exception text — so a secret is hidden by its value, not
 * only under the key names someone thought of. Registered once, where settings are resolved.
 */
const secretValues = new Set<string>()

/**
 * Values shorter than this are not searched for: replacing every "ab" in every line would make
 * the logs unreadable and protect nothing (such a password is guessable anyway). Real secrets —
 * API_TOKEN needs 16 characters, cloud keys have 40 — are far longer.
 */
export const MIN_REDACTED_LENGTH = 4

export const REDACTED = '[redacted]'

export function registerSecret(value: string | undefined): void {
  if (value === undefined || value.length < MIN_REDACTED_LENGTH) return
  secretValues.add(value)
}

/** For tests: forget every registered value. */
export function forgetSecrets(): void {
  secretValues.clear()
}

/**
 * `text` with every registered secret replaced by [redacted]: as is, JSON-escaped (a secret with a
 * quote or backslash inside a JSON log line), and URL-encoded (a secret inside a URL or body).
 */
export function redactSecrets(text: string): string {
  if (secretValues.size === 0) return text
  let result = text
  // Longest first, so a secret that contains another is replaced whole.
  for (const secret of [...secretValues].sort((a, b) => b.length - a.length)) {
    for (const form of new Set([secret, JSON.stringify(secret).slice(1, -1), encodeURIComponent(secret)])) {
      if (result.includes(form)) result = result.split(form).join(REDACTED)
    }
  }

  return result
}

/** A setting as far as secrets are concerned: its variable and whether it is secret. */
export interface SecretAware {
  env: string
  secret?: boolean
}

/** The `X_FILE` variable that may carry the value of secret setting X (Docker/Kubernetes secrets). */
export function fileVariable(name: string): string {
  return `${name}_FILE`
}

/**
 * The `*_FILE` convention (as in the official postgres image): for every secret setting X, X_FILE
 * names a file holding the value. One trailing newline is dropped (`echo secret > file`); nothing
 * else is trimmed. Setting both X and X_FILE, an unreadable file or an empty one is a
 * configuration error naming X_FILE. Returns the values found and the problems.
 */
export function readSecretFiles(
  specs: readonly SecretAware[],
  values: Record<string, string | undefined>,
  env: NodeJS.ProcessEnv,
): {values: Record<string, string>; issues: ConfigIssue[]} {
  const found: Record<string, string> = {}
  const issues: ConfigIssue[] = []
  for (const spec of specs) {
    if (!spec.secret) continue
    const variable = fileVariable(spec.env)
    const file = env[variable]
    if (file === undefined || file.trim() === '') continue
    if (values[spec.env] !== undefined) {
      issues.push({variable, message: `is set together with ${spec.env}; set only one of them`})
      continue
    }

    let text: string
    try {
      text = readFileSync(file, 'utf8')
    } catch (error) {
      issues.push({variable, message: passfileProblem(file, error)})
      continue
    }

    const value = text.replace(/\r?\n$/, '')
    if (value === '') {
      issues.push({variable, message: `${file} is empty`})
      continue
    }

    found[spec.env] = value
  }

  return {values: found, issues}
}
