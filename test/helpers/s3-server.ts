import {S3Client} from '@aws-sdk/client-s3'
import {ChildProcess, spawn} from 'node:child_process'
import * as fs from 'node:fs/promises'
import * as os from 'node:os'
import * as path from 'node:path'
import {createInterface} from 'node:readline'

/**
 * A real S3-protocol server for tests: s3rver in its own process (see s3rver-process.js), on a
 * free port of 127.0.0.1, storing into a temp directory, with one bucket created. Facts that shape
 * it (../shared/HARNESS.md): it accepts any secret (no SigV4 check) but rejects unknown access
 * keys; it does not implement AbortMultipartUpload, ListMultipartUploads or conditional writes.
 * `stop()`/`start()` keep the port and the data, so a test can kill it mid-upload and look after.
 */
export interface S3Server {
  kind: 's3rver' | 'rgw'
  /** What this server implements, so one suite asserts the behaviour of each store exactly. */
  capabilities: S3Capabilities
  bucket: string
  port: number
  endpoint: string
  directory: string
  accessKeyId: string
  secretAccessKey: string
  /** The variables that point dbb at this server (through `endpoint`, or another such as a proxy). */
  dbbEnv(extra?: Record<string, string>, endpoint?: string): Record<string, string>
  /** An SDK client for the test's own checks and setup. */
  client(): S3Client
  start(): Promise<void>
  /** Kills the server process at once (like a crash or a network cut). */
  stop(): Promise<void>
  /** SIGSTOP / SIGCONT: a server that keeps its connections open and answers nothing (a hung gateway). */
  pause(): Promise<void>
  resume(): Promise<void>
  destroy(): Promise<void>
}

export interface S3Capabilities {
  /** A wrong secret is refused (SignatureDoesNotMatch). */
  verifiesSignature: boolean
  abortMultipartUpload: boolean
  listMultipartUploads: boolean
  /** `If-None-Match: *` on PutObject answers 412 when the key exists. */
  conditionalPut: boolean
  /** `If-None-Match: *` on CompleteMultipartUpload answers 412 when the key exists. */
  conditionalCompleteMultipart: boolean
  bucketQuota: boolean
}

/** s3rver 3.7.1 (see ../shared/HARNESS.md). */
export const S3RVER_CAPABILITIES: S3Capabilities = {
  verifiesSignature: false,
  abortMultipartUpload: false,
  listMultipartUploads: false,
  conditionalPut: false,
  conditionalCompleteMultipart: false,
  bucketQuota: false,
}

const WRAPPER = path.join(__dirname, 's3rver-process.js')

export async function startS3Server(options: {bucket?: string} = {}): Promise<S3Server> {
  const bucket = options.bucket ?? 'dbb-test'
  const directory = await fs.mkdtemp(path.join(os.tmpdir(), 'dbb-s3-'))
  let child: ChildProcess | undefined
  let port = 0
  const clients: S3Client[] = []

  const launch = async () => {
    const spawned = spawn(process.execPath, ['--openssl-legacy-provider', WRAPPER, directory, String(port), bucket], {
      stdio: ['pipe', 'pipe', 'pipe'],
    })
    child = spawned
    let stderr = ''
    spawned.stderr?.setEncoding('utf8').on('data', (text: string) => (stderr += text))
    const ready = await new Promise<{port: number}>((resolve, reject) => {
      const lines = createInterface({input: spawned.stdout!})
      lines.once('line', (line) => resolve(JSON.parse(line)))
      spawned.once('exit', (code) => reject(new Error(`s3rver exited with code ${code} before it was ready: ${stderr}`)))
      spawned.once('error', reject)
    })
    port = ready.port
  }

  const server: S3Server = {
    kind: 's3rver',
    capabilities: S3RVER_CAPABILITIES,
    bucket,
    get port() {
      return port
    },
    get endpoint() {
      return `http://127.0.0.1:${port}`
    },
    directory,
    accessKeyId: 'S3RVER',
    secretAccessKey: 'S3RVER',
    dbbEnv(extra = {}, endpoint = server.endpoint) {
      return {
        STORAGE_BACKEND: 's3',
        S3_BUCKET: bucket,
        S3_ENDPOINT: endpoint,
        AWS_ACCESS_KEY_ID: server.accessKeyId,
        AWS_SECRET_ACCESS_KEY: server.secretAccessKey,
        AWS_DEFAULT_REGION: 'us-east-1',
        ...extra,
      }
    },
    client() {
      const client = new S3Client({
        region: 'us-east-1',
        endpoint: server.endpoint,
        forcePathStyle: true,
        credentials: {accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey},
        requestChecksumCalculation: 'WHEN_REQUIRED',
        responseChecksumValidation: 'WHEN_REQUIRED',
      })
      clients.push(client)
      return client
    },
    async start() {
      if (child && child.exitCode === null && child.signalCode === null) return
      await launch()
    },
    async stop() {
      const running = child
      if (!running || running.exitCode !== null || running.signalCode !== null) return
      const exited = new Promise((resolve) => running.once('exit', resolve))
      running.kill('SIGKILL')
      await exited
    },
    async pause() {
      child?.kill('SIGSTOP')
    },
    async resume() {
      child?.kill('SIGCONT')
    },
    async destroy() {
      for (const client of clients) client.destroy()
      await server.resume()
      await server.stop()
      await fs.rm(directory, {recursive: true, force: true})
    },
  }

  await launch()
  return server
}
