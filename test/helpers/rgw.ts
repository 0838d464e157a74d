import {CreateBucketCommand, S3Client} from '@aws-sdk/client-s3'
import {ChildProcess, execFile, spawn} from 'node:child_process'
import * as fs from 'node:fs/promises'
import * as os from 'node:os'
import * as path from 'node:path'
import {createInterface} from 'node:readline'
import {promisify} from 'node:util'

import {freePort} from './postgres'
import {S3Capabilities, S3Server} from './s3-server'

const exec = promisify(execFile)
const SCRIPT = path.join(__dirname, '..', '..', 'scripts', 'rgw.sh')
const ACCESS_KEY = 'DBBTESTACCESSKEY0001'
const SECRET_KEY = 'dbb-test-secret-key-not-used-anywhere-else'
/** Cluster + gateway start in ≈ 25 s here; the packages' first install takes longer (see install). */
const START_TIMEOUT_MS = 240_000

/**
 * Ceph RADOS Gateway, a production S3 implementation, for the tests: scripts/rgw.sh starts a
 * single-node cluster (memstore OSD, auth none, pool size 1) and radosgw on a free port of
 * 127.0.0.1 in a temp directory, and stops every daemon by its pid file when its stdin closes —
 * so a test runner that dies leaves no cluster behind. ONE cluster per test file that needs it;
 * each suite gets its own bucket (`bucket(name)`). A failed start throws with the daemons' log
 * tails: a machine that cannot run RGW fails the run, it never skips it.
 */
export interface RgwCluster {
  port: number
  endpoint: string
  directory: string
  /** A bucket of its own on the gateway, seen as an S3Server (stop/start/pause act on the shared gateway). */
  bucket(name: string): Promise<S3Server>
  /** Runs radosgw-admin against the cluster (e.g. to set a bucket quota). */
  admin(...args: string[]): Promise<string>
  destroy(): Promise<void>
}

export async function startRgw(): Promise<RgwCluster> {
  await exec('bash', [SCRIPT, 'install'], {timeout: 15 * 60_000}).catch((error: Error & {stderr?: string}) => {
    throw new Error(`could not install Ceph for the RGW tests: ${error.stderr || error.message}`)
  })
  const directory = await fs.mkdtemp(path.join(os.tmpdir(), 'dbb-rgw-'))
  const port = await freePort()
  const endpoint = `http://127.0.0.1:${port}`
  const conf = path.join(directory, 'ceph.conf')
  const pidFile = path.join(directory, 'run', 'client.rgw.r.pid')

  const supervisor: ChildProcess = spawn('bash', [SCRIPT, 'serve', directory, String(port), ACCESS_KEY, SECRET_KEY], {
    stdio: ['pipe', 'pipe', 'pipe'],
  })
  let stderr = ''
  supervisor.stderr?.setEncoding('utf8').on('data', (text: string) => (stderr += text))
  const exited = new Promise<void>((resolve) => supervisor.once('exit', () => resolve()))
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      supervisor.stdin?.end()
      reject(new Error(`RGW did not start within ${START_TIMEOUT_MS / 1000} s (logs in ${directory}/log):\n${stderr}`))
    }, START_TIMEOUT_MS)
    createInterface({input: supervisor.stdout!}).on('line', (line) => {
      if (line !== 'READY') return
      clearTimeout(timer)
      resolve()
    })
    supervisor.once('exit', (code) => {
      clearTimeout(timer)
      reject(new Error(`RGW failed to start (exit code ${code}):\n${stderr}`))
    })
  })

  const gatewayPid = async () => Number((await fs.readFile(pidFile, 'utf8')).trim())
  const gatewayRunning = async () => {
    const pid = await gatewayPid().catch(() => 0)
    if (!pid) return false
    try {
      process.kill(pid, 0)
      return true
    } catch {
      return false
    }
  }

  const waitForGateway = async () => {
    const deadline = Date.now() + 60_000
    while (Date.now() < deadline) {
      const answered = await fetch(endpoint, {signal: AbortSignal.timeout(2000)}).then(
        () => true,
        () => false,
      )
      if (answered) return
      await new Promise((resolve) => setTimeout(resolve, 200))
    }

    throw new Error(`radosgw did not answer on ${endpoint} within 60 s after a restart (log: ${directory}/log/client.rgw.r.log)`)
  }

  const clients: S3Client[] = []
  const cluster: RgwCluster = {
    port,
    endpoint,
    directory,
    async admin(...args) {
      const {stdout} = await exec('radosgw-admin', ['--conf', conf, '-n', 'client.rgw.r', '-k', path.join(directory, 'rgw', 'keyring'), ...args])
      return stdout
    },
    async bucket(bucket) {
      const server: S3Server = {
        kind: 'rgw',
        capabilities: RGW_CAPABILITIES,
        bucket,
        port,
        endpoint,
        directory,
        accessKeyId: ACCESS_KEY,
        secretAccessKey: SECRET_KEY,
        dbbEnv(extra = {}, target = endpoint) {
          return {
            STORAGE_BACKEND: 's3',
            S3_BUCKET: bucket,
            S3_ENDPOINT: target,
            AWS_ACCESS_KEY_ID: ACCESS_KEY,
            AWS_SECRET_ACCESS_KEY: SECRET_KEY,
            AWS_DEFAULT_REGION: 'us-east-1',
            ...extra,
          }
        },
        client() {
          const client = new S3Client({
            region: 'us-east-1',
            endpoint,
            forcePathStyle: true,
            credentials: {accessKeyId: ACCESS_KEY, secretAccessKey: SECRET_KEY},
            requestChecksumCalculation: 'WHEN_REQUIRED',
            responseChecksumValidation: 'WHEN_REQUIRED',
          })
          clients.push(client)
          return client
        },
        async start() {
          if (await gatewayRunning()) return
          await exec('radosgw', ['--conf', conf, '-n', 'client.rgw.r', '-k', path.join(directory, 'rgw', 'keyring')])
          await waitForGateway()
        },
        async stop() {
          const pid = await gatewayPid().catch(() => 0)
          if (!pid || !(await gatewayRunning())) return
          process.kill(pid, 'SIGCONT')
          process.kill(pid, 'SIGKILL')
          while (await gatewayRunning()) await new Promise((resolve) => setTimeout(resolve, 50))
        },
        async pause() {
          process.kill(await gatewayPid(), 'SIGSTOP')
        },
        async resume() {
          // A gateway a test killed has nothing to continue.
          if (await gatewayRunning()) process.kill(await gatewayPid(), 'SIGCONT')
        },
        async destroy() {
          // The bucket goes with the cluster (memstore); the gateway stays up for the other suites.
          await server.resume().catch(() => undefined)
        },
      }
      await server.start()
      await server.client().send(new CreateBucketCommand({Bucket: bucket}))
      return server
    },
    async destroy() {
      for (const client of clients) client.destroy()
      supervisor.stdin?.end()
      await exited
      await fs.rm(directory, {recursive: true, force: true})
    },
  }
  return cluster
}

/** What RGW 16.2 implements (checked by the tests that use each: see the s3 suites). */
export const RGW_CAPABILITIES: S3Capabilities = {
  verifiesSignature: true,
  abortMultipartUpload: true,
  listMultipartUploads: true,
  conditionalPut: true,
  conditionalCompleteMultipart: false,
  bucketQuota: true,
}

/** One RGW per test file: every suite in the file shares it (it takes ≈ 25 s and ≈ 500 MB). */
let shared: Promise<RgwCluster> | undefined
export function sharedRgw(): Promise<RgwCluster> {
  shared ??= startRgw()
  return shared
}

export async function destroySharedRgw(): Promise<void> {
  const cluster = await shared?.catch(() => undefined)
  shared = undefined
  await cluster?.destroy()
}
