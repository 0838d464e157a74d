import {spawn} from 'node:child_process'
import * as fs from 'node:fs/promises'
import * as os from 'node:os'
import * as path from 'node:path'

export const ROOT = path.resolve(__dirname, '..', '..', '..')
export const DBB = path.join(ROOT, 'bin', 'run.js')
const RSS_PROBE = path.join(ROOT, 'bench', 'rss-probe.js')

export interface Timed {
  wallMs: number
  stdout: string
  /** Peak RSS of the dbb process (all its threads), when the command was dbb. */
  maxRssBytes?: number
}

/** Runs a shell pipeline (`sh -c`, `set -o pipefail` semantics via bash) and times it. */
export async function timeShell(script: string, env: NodeJS.ProcessEnv): Promise<Timed> {
  return timeSpawn('bash', ['-o', 'pipefail', '-c', script], env)
}

/**
 * Runs dbb the way users do — the `dbb` executable (bin/run.js through its `#!/usr/bin/env node`
 * line, what npm's bin link runs), not `node bin/run.js` — with the RSS probe preloaded through
 * NODE_OPTIONS (`--require` only: it changes no V8 setting), and times it.
 */
export async function timeDbb(args: string[], env: NodeJS.ProcessEnv): Promise<Timed> {
  const rssFile = path.join(os.tmpdir(), `dbb-bench-rss-${process.pid}-${Date.now()}.json`)
  const nodeOptions = [`--require ${RSS_PROBE}`, env.NODE_OPTIONS].filter(Boolean).join(' ')
  const timed = await timeSpawn(DBB, args, {...env, NODE_OPTIONS: nodeOptions, DBB_BENCH_RSS_FILE: rssFile})
  const probe = JSON.parse(await fs.readFile(rssFile, 'utf8')) as {maxRssBytes: number}
  await fs.rm(rssFile, {force: true})
  return {...timed, maxRssBytes: probe.maxRssBytes}
}

async function timeSpawn(command: string, args: string[], env: NodeJS.ProcessEnv): Promise<Timed> {
  const started = process.hrtime.bigint()
  const child = spawn(command, args, {env, stdio: ['ignore', 'pipe', 'pipe']})
  let stdout = ''
  let stderr = ''
  child.stdout.setEncoding('utf8').on('data', (text: string) => (stdout += text))
  child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr = (stderr + text).slice(-4000)))
  const code = await new Promise<number | null>((resolve, reject) => {
    child.on('error', reject)
    child.on('close', resolve)
  })
  const wallMs = Number(process.hrtime.bigint() - started) / 1e6
  if (code !== 0) throw new Error(`${command} ${args.join(' ').slice(0, 200)} exited with ${code}: ${stderr.trim()}`)
  return {wallMs, stdout}
}

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const middle = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
}
