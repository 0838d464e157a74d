import {execFileSync} from 'node:child_process'
import {readFileSync, readdirSync} from 'node:fs'
import * as path from 'node:path'
import {parseAllDocuments} from 'yaml'

import {loadConfig} from '../../src/config'
import {fileVariable} from '../../src/secrets'
import {SETTING_NAMES, setting} from '../../src/settings'
import {STORAGE_PROVIDER_HOOK, StorageProvider} from '../../src/storage/contract'

/**
 * deploy/kubernetes/*.yaml validated against the Kubernetes API's JSON schemas (kubernetes-models
 * carries validators generated from the official OpenAPI definitions), then against what dbb does:
 * the probes' routes, the grace period, the settings it reads, secrets as files.
 */

const ROOT = path.resolve(__dirname, '..', '..')
const DIR = path.join(ROOT, 'deploy/kubernetes')

interface Manifest {
  apiVersion: string
  kind: string
  metadata: {name: string}
  spec?: unknown
  [key: string]: unknown
}

/** Schema errors of each object, null where valid (test/helpers/validate-kubernetes.mjs). */
function schemaErrors(objects: unknown[]): (string | null)[] {
  const output = execFileSync(process.execPath, [path.join(ROOT, 'test/helpers/validate-kubernetes.mjs')], {
    input: JSON.stringify(objects),
    cwd: ROOT,
    encoding: 'utf8',
  })
  return JSON.parse(output)
}

const files = readdirSync(DIR).filter((file) => file.endsWith('.yaml'))
const manifests: {file: string; manifest: Manifest}[] = files.flatMap((file) =>
  parseAllDocuments(readFileSync(path.join(DIR, file), 'utf8')).map((document) => {
    expect(document.errors).toEqual([])
    return {file, manifest: document.toJS() as Manifest}
  }),
)
const byKind = (kind: string) => manifests.filter(({manifest}) => manifest.kind === kind).map(({manifest}) => manifest)

interface Container {
  args?: string[]
  env?: {name: string; value?: string}[]
  readinessProbe?: {httpGet?: {path: string; port: string | number}}
  livenessProbe?: {httpGet?: unknown; tcpSocket?: {port: string | number}}
  ports?: {name: string; containerPort: number}[]
  volumeMounts?: {name: string; mountPath: string}[]
  securityContext?: {readOnlyRootFilesystem?: boolean}
}
interface PodSpec {
  terminationGracePeriodSeconds?: number
  containers: Container[]
  volumes?: {name: string; secret?: unknown; persistentVolumeClaim?: unknown}[]
}
const deployment = byKind('Deployment')[0] as unknown as {spec: {template: {spec: PodSpec}}}
const cronJob = byKind('CronJob')[0] as unknown as {spec: {jobTemplate: {spec: {template: {spec: PodSpec}}}}}
const pods: [string, PodSpec][] = [
  ['Deployment', deployment.spec.template.spec],
  ['CronJob', cronJob.spec.jobTemplate.spec.template.spec],
]
/** Settings of every storage plugin in the workspace, through the hook its package.json declares (./dist → ./src). */
async function providerSettings(): Promise<StorageProvider['settings']> {
  const settings: StorageProvider['settings'] = []
  for (const name of readdirSync(path.join(ROOT, 'src/plugins'))) {
    const pkg = JSON.parse(readFileSync(path.join(ROOT, 'src/plugins', name, 'package.json'), 'utf8'))
    const hookPath = String(pkg.oclif.hooks[STORAGE_PROVIDER_HOOK]).replace(/^\.\/dist\//, './src/')
    const hook = (await import(path.join(ROOT, 'src/plugins', name, hookPath))).default as () => Promise<StorageProvider>
    settings.push(...(await hook()).settings)
  }

  return settings
}

const defaultShutdownGraceMs = loadConfig(['server'], {API_TOKEN: 'x'.repeat(64)}).server.shutdownGraceMs

describe('deploy/kubernetes', () => {
  it('has a Deployment, a Service, a CronJob, a PVC and the Secret they mount', () => {
    expect(manifests.map(({manifest}) => manifest.kind).sort()).toEqual(['CronJob', 'Deployment', 'PersistentVolumeClaim', 'Secret', 'Service'])
  })

  it('every object validates against the Kubernetes schema of its apiVersion and kind', () => {
    const errors = schemaErrors(manifests.map(({manifest}) => manifest))
    const named = manifests.map(({file, manifest}, index) => ({object: `${file}: ${manifest.kind} ${manifest.metadata.name}`, error: errors[index]}))
    expect(named).toEqual(named.map(({object}) => ({object, error: null})))
  })

  it('the schema check fails on an invalid manifest', () => {
    const badReplicas = structuredClone(byKind('Deployment')[0]) as unknown as {spec: {replicas: unknown}}
    badReplicas.spec.replicas = 'one'
    const noContainers = structuredClone(byKind('Deployment')[0]) as unknown as {spec: {template: {spec: {containers?: unknown}}}}
    delete noContainers.spec.template.spec.containers
    const badProbe = structuredClone(byKind('Deployment')[0]) as unknown as {spec: {template: {spec: {containers: {livenessProbe: unknown}[]}}}}
    badProbe.spec.template.spec.containers[0].livenessProbe = {tcpSocket: {port: {not: 'a port'}}}
    const errors = schemaErrors([badReplicas, noContainers, badProbe])
    expect(errors.map((error) => typeof error === 'string' && error.length > 0)).toEqual([true, true, true])
    expect(errors.join('\n')).toMatch(/replicas/)
  })

  it('the Deployment runs dbb serve: ready on /health, alive on a TCP check, so a database outage does not restart it', () => {
    const [container] = deployment.spec.template.spec.containers
    expect(container.args).toEqual(['serve'])
    expect(container.readinessProbe?.httpGet?.path).toBe('/health')
    expect(container.livenessProbe?.httpGet).toBeUndefined()
    expect(container.livenessProbe?.tcpSocket?.port).toBe('http')
    const port = loadConfig(['server'], {API_TOKEN: 'x'.repeat(64)}).server.port
    expect(container.ports).toEqual([{name: 'http', containerPort: port}])
  })

  it('the CronJob runs dbb backup run', () => {
    expect(cronJob.spec.jobTemplate.spec.template.spec.containers[0].args).toEqual(['backup', 'run'])
  })

  it.each(pods)('%s: terminationGracePeriodSeconds exceeds SHUTDOWN_GRACE', (_kind, pod) => {
    const env = Object.fromEntries((pod.containers[0].env ?? []).map((variable) => [variable.name, variable.value ?? '']))
    const graceMs = env.SHUTDOWN_GRACE === undefined ? defaultShutdownGraceMs : loadConfig(['server'], {API_TOKEN: 'x'.repeat(64), SHUTDOWN_GRACE: env.SHUTDOWN_GRACE}).server.shutdownGraceMs
    expect((pod.terminationGracePeriodSeconds ?? 30) * 1000).toBeGreaterThan(graceMs)
  })

  it.each(pods)('%s: sets only settings dbb knows, secrets only as *_FILE paths inside a mounted Secret, read-only root', async (_kind, pod) => {
    const specs = [...SETTING_NAMES.map((name) => setting(name)), ...(await providerSettings())]
    const secretNames = specs.filter((spec) => spec.secret).map((spec) => spec.env)
    const known = new Set([...specs.map((spec) => spec.env), ...secretNames.map(fileVariable)])
    const [container] = pod.containers
    const env = container.env ?? []
    expect(env.map((variable) => variable.name).filter((name) => !known.has(name))).toEqual([])
    expect(env.filter((variable) => secretNames.includes(variable.name))).toEqual([])

    const secretVolumes = new Set((pod.volumes ?? []).filter((volume) => volume.secret).map((volume) => volume.name))
    const secretMounts = (container.volumeMounts ?? []).filter((mount) => secretVolumes.has(mount.name)).map((mount) => mount.mountPath)
    for (const variable of env.filter((candidate) => candidate.name.endsWith('_FILE'))) {
      expect(secretMounts.some((mountPath) => variable.value?.startsWith(`${mountPath}/`))).toBe(true)
    }

    expect(container.securityContext?.readOnlyRootFilesystem).toBe(true)
    expect(container.volumeMounts?.map((mount) => mount.mountPath)).toEqual(expect.arrayContaining(['/backups', '/tmp']))
  })
})
