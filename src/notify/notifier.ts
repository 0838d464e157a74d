import {setTimeout as sleep} from 'node:timers/promises'

import type {Counter, Registry} from 'prom-client'

import {errorMessage} from '../errors'
import type {Logger} from '../logger'
import {NOTIFICATION_KINDS, NotificationEvent, NotificationPayload, buildPayload} from './events'
import {DeliveryError, reasonText, send, targetWants} from './senders'
import {TARGET_KINDS, Target, TargetKind} from './targets'

/** Attempts per delivery (the first and two retries), and the pause before retry n: 0.5 s, 1 s. */
export const MAX_ATTEMPTS = 3
export const RETRY_BASE_MS = 500

export interface NotifyConfig {
  targets: Target[]
  /** NOTIFY_WEBHOOK_SECRET: key of the webhook's HMAC-SHA256 signature header. */
  webhookSecret?: string
  /** NOTIFY_ON_SUCCESS: also send the opt-in good news (backup.succeeded, drill.passed). */
  onSuccess: boolean
  /** NOTIFY_TIMEOUT: one attempt's limit; also how long a CLI command waits for deliveries at exit. */
  timeoutMs: number
  /** NOTIFY_REMINDER_INTERVAL: serve repeats a still-failing check or stalled WAL this often. */
  reminderMs: number
}

export interface DeliveryResult {
  target: TargetKind
  /** The target's URL with every credential left out. */
  url: string
  event: NotificationPayload['kind']
  ok: boolean
  attempts: number
  durationMs: number
  error?: string
}

/**
 * The one way dbb tells people what happened. `emit` never throws and never waits: each target
 * gets its own delivery (per-attempt timeout, bounded retries with backoff), logged as
 * `notify.delivered` / `notify.failed` and counted in /metrics. A backup's outcome and exit code
 * never depend on a delivery; a CLI command waits for them at exit only up to `settle`'s bound.
 */
export class Notifier {
  private readonly pending = new Set<Promise<DeliveryResult>>()
  private readonly stop = new AbortController()
  private counter?: Counter<'target' | 'outcome'>

  constructor(
    readonly config: NotifyConfig,
    private readonly logger: Logger,
  ) {}

  get configured(): boolean {
    return this.config.targets.length > 0
  }

  /** Sends `event` to every target that takes it; returns at once. */
  emit(event: NotificationEvent): void {
    if (NOTIFICATION_KINDS[event.kind].optIn && !this.config.onSuccess) return
    void this.deliver(event)
  }

  /** Sends `event` to every target that takes it and resolves with each target's result (never rejects). */
  async deliver(event: NotificationEvent, options: {allTargets?: boolean} = {}): Promise<DeliveryResult[]> {
    const payload = buildPayload(event)
    const targets = options.allTargets ? this.config.targets : this.config.targets.filter((target) => targetWants(target, event.kind))
    return Promise.all(
      targets.map((target) => {
        const delivery = this.deliverTo(target, payload)
        this.pending.add(delivery)
        void delivery.finally(() => this.pending.delete(delivery))
        return delivery
      }),
    )
  }

  /**
   * Waits for the deliveries in flight, at most `boundMs`; the rest are abandoned (and logged as
   * failed). What a CLI command does before it exits, and serve on shutdown.
   */
  async settle(boundMs = this.config.timeoutMs): Promise<void> {
    if (this.pending.size === 0) return
    const all = Promise.allSettled([...this.pending])
    const timer = sleep(boundMs, undefined, {ref: false})
    await Promise.race([all, timer])
    if (this.pending.size === 0) return
    this.stop.abort(new Error(`abandoned: still pending when dbb exited (after waiting ${formatMs(boundMs)})`))
    // Abandoned attempts end at once (their sockets are destroyed); wait for their log lines.
    await Promise.race([Promise.allSettled([...this.pending]), sleep(1000, undefined, {ref: false})])
  }

  /** Counts deliveries into `registry` as dbb_notifications_total{target, outcome} (every series from 0). */
  attachMetrics(registry: Registry): void {
    // Loaded here, not at the top: every command builds a Notifier, and prom-client (with the
    // OpenTelemetry API it pulls in) costs ~20 MB of RSS that only `dbb serve`'s /metrics needs.
    const {Counter: PromCounter} = require('prom-client') as typeof import('prom-client')
    this.counter = new PromCounter({
      name: 'dbb_notifications_total',
      help: 'Notification deliveries by target kind and outcome (delivered, failed after its retries).',
      labelNames: ['target', 'outcome'] as const,
      registers: [registry],
    })
    for (const target of TARGET_KINDS) for (const outcome of ['delivered', 'failed']) this.counter.inc({target, outcome}, 0)
  }

  private async deliverTo(target: Target, payload: NotificationPayload): Promise<DeliveryResult> {
    const started = Date.now()
    const base = {target: target.kind, url: target.display, event: payload.kind}
    let attempts = 0
    let error = ''
    while (attempts < MAX_ATTEMPTS) {
      attempts++
      const timeout = timeoutSignal(this.config.timeoutMs)
      const signal = AbortSignal.any([this.stop.signal, timeout.signal])
      try {
        await send(target, payload, {signal, timeoutMs: this.config.timeoutMs, webhookSecret: this.config.webhookSecret})
        timeout.clear()
        const result: DeliveryResult = {...base, ok: true, attempts, durationMs: Date.now() - started}
        this.counter?.inc({target: target.kind, outcome: 'delivered'})
        this.logger.info({event: 'notify.delivered', target: target.kind, url: target.display, kind: payload.kind, attempts, durationMs: result.durationMs}, `${payload.kind} delivered to ${target.display}`)
        return result
      } catch (caught) {
        error = errorMessage(caught instanceof DeliveryError ? caught : new Error(reasonText(caught)))
        const retryable = caught instanceof DeliveryError ? caught.retryable : true
        timeout.clear()
        if (!retryable || attempts >= MAX_ATTEMPTS || this.stop.signal.aborted) break
        this.logger.debug({event: 'notify.retry', target: target.kind, url: target.display, kind: payload.kind, attempt: attempts, error}, 'notification attempt failed; retrying')
        try {
          await sleep(RETRY_BASE_MS * 2 ** (attempts - 1), undefined, {signal: this.stop.signal})
        } catch {
          error = errorMessage(new Error(reasonText(this.stop.signal.reason)))
          break
        }
      }
    }

    const result: DeliveryResult = {...base, ok: false, attempts, durationMs: Date.now() - started, error}
    this.counter?.inc({target: target.kind, outcome: 'failed'})
    this.logger.error({event: 'notify.failed', target: target.kind, url: target.display, kind: payload.kind, attempts, error}, `could not deliver ${payload.kind} to ${target.display}: ${error}`)
    return result
  }
}

/** AbortSignal.timeout with a message that says what happened, and a way to drop its timer once the attempt is over. */
function timeoutSignal(ms: number): {signal: AbortSignal; clear: () => void} {
  const controller = new AbortController()
  const timer = setTimeout(() => controller.abort(new Error(`timed out after ${formatMs(ms)}`)), ms)
  timer.unref()
  return {signal: controller.signal, clear: () => clearTimeout(timer)}
}

function formatMs(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`
}

/**
 * A condition checked again and again (the WAL age, the backup checks in serve): tells when to
 * notify so that people hear of a change once, then a reminder every `reminderMs` while it lasts,
 * and once more when it is over — not on every check.
 */
export class AlertState {
  private failingSince?: number
  private lastSentAt = 0

  constructor(private readonly reminderMs: number) {}

  update(failing: boolean, now: number): 'raised' | 'reminder' | 'recovered' | undefined {
    if (!failing) {
      if (this.failingSince === undefined) return undefined
      this.failingSince = undefined
      return 'recovered'
    }

    if (this.failingSince === undefined) {
      this.failingSince = now
      this.lastSentAt = now
      return 'raised'
    }

    if (now - this.lastSentAt < this.reminderMs) return undefined
    this.lastSentAt = now
    return 'reminder'
  }
}
