import {readFileSync} from 'node:fs'
import * as fs from 'node:fs/promises'
import {createInterface} from 'node:readline'

import {startCli} from './cli'

/**
 * The crash-point harness (issue 11): runs the built CLI with JSON logs at debug level and
 * SIGKILLs it — no handler runs, no cleanup, as an OOM kill or a node failure would — either when
 * a given phase event appears on its log stream or after a delay. Phase boundaries are the events
 * a clean run logs (backup.started, backup.stored, backup.verified, …), so a boundary added to the
 * source is covered without touching the tests.
 *
 * The killed process's children (pg_dump, psql) are left to react as they would in production
 * (pg_dump gets EPIPE, psql reads EOF on stdin); any still alive after a few seconds are killed.
 */
export interface KillPoint {
  /** For test names: `at backup.stored`, `after 734 ms`. */
  label: string
  /** Kill when this event is logged (its first occurrence). */
  event?: string
  /** Kill this many ms after the spawn. */
  afterMs?: number
}

export interface CrashRun {
  /** Whether the kill landed (false: the command had already exited on its own). */
  killed: boolean
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
  /** Every `event` field logged, in order. */
  events: string[]
  durationMs: number
  /** The killed (or exited) process: the files it names by its pid can be looked for. */
  pid: number
}

export const DEBUG_JSON_LOGS = {LOG_FORMAT: 'json', LOG_LEVEL: 'debug'}

export async function runWithKill(args: string[], env: Record<string, string | undefined>, point?: KillPoint, timeoutMs = 90_000): Promise<CrashRun> {
  const started = Date.now()
  const child = startCli(args, {...env, ...DEBUG_JSON_LOGS})
  let stdout = ''
  let stderr = ''
  const events: string[] = []
  let killed = false
  let children: number[] = []

  const killNow = () => {
    if (killed || child.exitCode !== null || child.signalCode !== null) return
    children = childPids(child.pid!)
    killed = child.kill('SIGKILL')
  }

  child.stdout!.setEncoding('utf8').on('data', (text: string) => (stdout += text))
  const lines = createInterface({input: child.stderr!})
  lines.on('line', (line) => {
    stderr += `${line}\n`
    const event = eventOf(line)
    if (event === undefined) return
    events.push(event)
    if (point?.event === event) killNow()
  })
  const timer = point?.afterMs === undefined ? undefined : setTimeout(killNow, point.afterMs)
  const hang = setTimeout(() => {
    killNow()
    stderr += `\n[crash-harness] no exit within ${timeoutMs} ms: killed\n`
  }, timeoutMs)

  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve, reject) => {
    child.once('error', reject)
    child.once('close', (exitCode, exitSignal) => resolve([exitCode, exitSignal]))
  })
  clearTimeout(timer)
  clearTimeout(hang)
  await reapOrphans(children)
  return {killed, code, signal, stdout, stderr, events, durationMs: Date.now() - started, pid: child.pid!}
}

/** The phase events of a clean run, first occurrences in order, without periodic progress lines. */
export function phaseEvents(run: CrashRun): string[] {
  return [...new Set(run.events.filter((event) => !event.endsWith('progress')))]
}

/**
 * A small seeded PRNG (mulberry32), so a failing random kill point is reproducible: the seed is in
 * the test name, and CRASH_SEED=<n> repeats it.
 */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296
  }
}

export const CRASH_SEED = Number(process.env.CRASH_SEED ?? 20261202)

/** Kill points: one at each phase boundary, then `count` seeded delays spread over a clean run's duration. */
export function killPoints(phases: string[], cleanDurationMs: number, count: number, seed: number): KillPoint[] {
  const random = seededRandom(seed)
  const delays = Array.from({length: count}, () => Math.round(300 + random() * Math.max(cleanDurationMs - 300, 100)))
  return [
    ...phases.map((event) => ({label: `at ${event}`, event})),
    ...delays.sort((a, b) => a - b).map((afterMs) => ({label: `after ${afterMs} ms (seed ${seed})`, afterMs})),
  ]
}

function eventOf(line: string): string | undefined {
  if (!line.startsWith('{')) return undefined
  try {
    const record = JSON.parse(line) as {event?: unknown}
    return typeof record.event === 'string' ? record.event : undefined
  } catch {
    return undefined
  }
}

function childPids(pid: number): number[] {
  try {
    // Synchronously, in the instant before the kill: afterwards the children are re-parented.
    const text = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8')
    return text.trim().split(/\s+/).filter(Boolean).map(Number)
  } catch {
    return []
  }
}

/** Gives orphaned children a few seconds to notice the closed pipe and exit; kills those that do not. */
async function reapOrphans(pids: number[], graceMs = 5000): Promise<void> {
  const deadline = Date.now() + graceMs
  let alive = pids
  while (alive.length > 0 && Date.now() < deadline) {
    alive = (await Promise.all(alive.map(async (pid) => ((await isRunning(pid)) ? pid : undefined)))).filter((pid): pid is number => pid !== undefined)
    if (alive.length > 0) await new Promise((resolve) => setTimeout(resolve, 50))
  }

  for (const pid of alive) {
    try {
      process.kill(pid, 'SIGKILL')
    } catch {
      // already gone
    }
  }
}

async function isRunning(pid: number): Promise<boolean> {
  const status = await fs.readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '')
  // A zombie (state Z) has exited; its parent (init, after the kill) reaps it.
  return status !== '' && !/^\d+ \(.*\) Z /.test(status)
}
