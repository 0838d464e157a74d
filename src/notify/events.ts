import {randomUUID} from 'node:crypto'
import * as os from 'node:os'

import {z} from 'zod'

/**
 * Every event dbb tells a human (or a machine) about, declared once: its severity, and whether
 * it is sent only when NOTIFY_ON_SUCCESS=true (good news is opt-in; bad news always goes out).
 * `backup.started` exists for healthchecks-style targets (a "start" ping, so a run that never
 * finishes alerts too); the other targets do not receive it.
 */
export const NOTIFICATION_KINDS = {
  'backup.started': {severity: 'info', optIn: false, summary: 'a backup started (healthchecks "start" ping only)'},
  'backup.succeeded': {severity: 'info', optIn: true, summary: 'a backup was stored and verified'},
  'backup.failed': {severity: 'error', optIn: false, summary: 'a backup failed (nothing was stored)'},
  'check.failed': {severity: 'error', optIn: false, summary: 'dbb check (or serve\'s CHECK_INTERVAL check) failed'},
  'check.recovered': {severity: 'info', optIn: false, summary: 'serve: a failing check passes again'},
  'drill.failed': {severity: 'error', optIn: false, summary: 'a restore drill failed'},
  'drill.passed': {severity: 'info', optIn: true, summary: 'a restore drill passed'},
  'wal.stalled': {severity: 'error', optIn: false, summary: 'serve: the newest archived WAL segment is older than its limit'},
  'wal.recovered': {severity: 'info', optIn: false, summary: 'serve: WAL archiving caught up again'},
  'retention.refused': {severity: 'warning', optIn: false, summary: 'retention kept a damaged or unreadable backup instead of deleting it'},
  'notify.test': {severity: 'info', optIn: false, summary: 'dbb notify test'},
} as const satisfies Record<string, {severity: Severity; optIn: boolean; summary: string}>

export type Severity = 'info' | 'warning' | 'error'
export type NotificationKind = keyof typeof NOTIFICATION_KINDS
export const NOTIFICATION_KIND_NAMES = Object.keys(NOTIFICATION_KINDS) as [NotificationKind, ...NotificationKind[]]

/** Extra facts of an event (backup id, storage location, failing checks …): flat, secret-free values. */
export type EventDetails = Record<string, string | number | boolean | null>

/** What a module hands to the notifier: `notifier.emit({kind: 'drill.failed', summary: '…', details: {backupId}})`. */
export interface NotificationEvent {
  kind: NotificationKind
  /** One line for people, free of secrets (error texts go through errorMessage() first). */
  summary: string
  details?: EventDetails
}

/** The version of the webhook payload; bumped on any incompatible change (fields are only added within a version). */
export const PAYLOAD_SCHEMA = 'dbb.notification/v1'

/**
 * The JSON body of every webhook delivery (and the data behind every other target's message).
 * This zod schema is the documented contract: README "Notifications" prints its JSON Schema
 * (`z.toJSONSchema(notificationPayload)`), and a unit test keeps the two equal.
 */
export const notificationPayload = z
  .object({
    schema: z.literal(PAYLOAD_SCHEMA).describe('Payload schema and version; fields are only added within a version'),
    id: z.string().meta({format: 'uuid', description: 'Unique per event, the same on every retry of it: deduplicate on it'}),
    kind: z.enum(NOTIFICATION_KIND_NAMES).describe('What happened'),
    severity: z.enum(['info', 'warning', 'error']),
    time: z.string().meta({format: 'date-time', description: 'When the event happened (UTC, ISO 8601)'}),
    host: z.string().describe('Host name of the machine (or pod) dbb runs on'),
    summary: z.string().describe('One line for people'),
    details: z.record(z.string(), z.union([z.string(), z.number(), z.boolean(), z.null()])).describe('Facts of the event, e.g. backupId, location, error, failures'),
  })
  .strict()

export type NotificationPayload = z.infer<typeof notificationPayload>

export function buildPayload(event: NotificationEvent, now = new Date()): NotificationPayload {
  return {
    schema: PAYLOAD_SCHEMA,
    id: randomUUID(),
    kind: event.kind,
    severity: NOTIFICATION_KINDS[event.kind].severity,
    time: now.toISOString(),
    host: os.hostname(),
    summary: event.summary,
    details: event.details ?? {},
  }
}
