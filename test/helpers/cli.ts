import {ChildProcess, spawn} from 'node:child_process'
import * as fs from 'node:fs/promises'
import * as os from 'node:os'
import * as path from 'node:path'

export const ROOT = path.resolve(__dirname, '..', '..')
export const BIN = path.join(ROOT, 'bin', 'run.js')

export interface CliResult {
  code: number | null
  stdout: string
  stderr: string
}

/**
 * The environment a CLI run sees: a clean one (no DB_* or storage variables leaking in from the
 * developer's shell), JSON logs, and an isolated oclif data dir so linked plugins do not leak
 * between tests or into the user's own installation.
 */
export function cliEnv(extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    LANG: 'C.UTF-8',
    LOG_FORMAT: 'json',
    AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
  }
  for (const [key, value] of Object.entries(extra)) {
    if (value === undefined) delete env[key]
    else env[key] = value
  }

  return env
}

/** Spawns the built CLI (bin/run.js) and returns once it exits. */
export function startCli(args: string[], env: Record<string, string | undefined> = {}, options: {cwd?: string} = {}): ChildProcess {
  return spawn(process.execPath, [BIN, ...args], {env: cliEnv(env), cwd: options.cwd ?? ROOT, stdio: ['ignore', 'pipe', 'pipe']})
}

export async function runCli(args: string[], env: Record<string, string | undefined> = {}, options: {cwd?: string} = {}): Promise<CliResult> {
  return collect(startCli(args, env, options))
}

export function collect(child: ChildProcess): Promise<CliResult> {
  let stdout = ''
  let stderr = ''
  child.stdout?.setEncoding('utf8').on('data', (text: string) => (stdout += text))
  child.stderr?.setEncoding('utf8').on('data', (text: string) => (stderr += text))
  return new Promise((resolve, reject) => {
    child.on('error', reject)
    child.on('close', (code) => resolve({code, stdout, stderr}))
  })
}

export async function tempDir(prefix = 'dbb-test-'): Promise<string> {
  return fs.mkdtemp(path.join(os.tmpdir(), prefix))
}

/**
 * A PATH of one directory holding a link to every program on this PATH but `programs` (the first of
 * each name, as the shell would find it): a dbb run with it does not find them (e.g. igzip and pigz,
 * so dbb gzips in-process). The benchmark uses it too.
 */
export async function pathWithout(programs: string | string[], directory: string): Promise<string> {
  const left = new Set(typeof programs === 'string' ? [programs] : programs)
  await fs.mkdir(directory, {recursive: true})
  for (const entry of (process.env.PATH ?? '').split(path.delimiter).filter(Boolean)) {
    for (const name of await fs.readdir(entry).catch(() => [] as string[])) {
      if (left.has(name)) continue
      await fs.symlink(path.join(entry, name), path.join(directory, name)).catch((error: NodeJS.ErrnoException) => {
        if (error.code !== 'EEXIST') throw error
      })
    }
  }

  return directory
}
