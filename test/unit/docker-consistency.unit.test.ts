import {existsSync, readFileSync, readdirSync, statSync} from 'node:fs'
import type {AddressInfo} from 'node:net'
import * as path from 'node:path'
import {parse as parseYaml} from 'yaml'

import {DEFAULT_PASSFILE, Section, loadConfig} from '../../src/config'
import {createLogger} from '../../src/logger'
import {AppDependencies, createApp} from '../../src/server/app'
import {fileVariable} from '../../src/secrets'
import {SETTING_NAMES, setting} from '../../src/settings'
import {STORAGE_PROVIDER_HOOK, StorageProvider} from '../../src/storage/contract'
import {freePort} from '../helpers/postgres'

/**
 * The image and compose files checked against the code they package (npm run test:docker builds
 * and runs them in a real engine): the commands, the settings catalog, the installed storage providers, the HTTP routes.
 */

// The s3 provider's create() loads the AWS SDK, which warns about old Node versions when it loads.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true'

const ROOT = path.resolve(__dirname, '..', '..')
const read = (file: string) => readFileSync(path.join(ROOT, file), 'utf8')
const COMPOSE_FILES = ['docker-compose.local.yml', 'docker-compose.s3.yml']

/** Variables set on containers that are not dbb, each with the reason it is legitimate. */
const OTHER_IMAGES_VARIABLES: Record<string, Record<string, string>> = {
  postgres: {
    POSTGRES_DB: 'postgres image: database created on first start',
    POSTGRES_PASSWORD_FILE: 'postgres image: superuser password read from a Docker secret',
  },
  'quay.io/minio/minio': {
    MINIO_ROOT_USER: 'MinIO: root access key',
    MINIO_ROOT_PASSWORD: 'MinIO: root secret key',
  },
  'quay.io/minio/mc': {MINIO_ROOT_PASSWORD: 'read by the bucket-creating shell command ($$MINIO_ROOT_PASSWORD)'},
}

interface Instruction {
  keyword: string
  args: string
}

/** Dockerfile instructions with continuation lines joined and comments dropped. */
function parseDockerfile(text: string): Instruction[] {
  const logical: string[] = []
  let current = ''
  for (const line of text.split('\n')) {
    if (/^\s*#/.test(line)) continue
    if (line.endsWith('\\')) {
      current += `${line.slice(0, -1)} `
      continue
    }

    current += line
    if (current.trim() !== '') logical.push(current.trim())
    current = ''
  }

  return logical.map((line) => {
    const [keyword, ...rest] = line.split(/\s+/)
    return {keyword: keyword.toUpperCase(), args: rest.join(' ')}
  })
}

const dockerfile = parseDockerfile(read('docker/Dockerfile'))
const stages = dockerfile.reduce<Instruction[][]>((all, instruction) => {
  if (instruction.keyword === 'FROM') all.push([])
  all.at(-1)?.push(instruction)
  return all
}, [])
const runtime = stages.at(-1) ?? []
const argsOf = (keyword: string, instructions = dockerfile) => instructions.filter((i) => i.keyword === keyword).map((i) => i.args)

/** Every storage plugin in the workspace, loaded through the hook its package.json declares (./dist → ./src). */
async function workspaceProviders(): Promise<StorageProvider[]> {
  const providers: StorageProvider[] = []
  for (const name of readdirSync(path.join(ROOT, 'src/plugins'))) {
    const pkg = JSON.parse(read(`src/plugins/${name}/package.json`))
    const hookPath = String(pkg.oclif.hooks[STORAGE_PROVIDER_HOOK]).replace(/^\.\/dist\//, './src/')
    const hook = (await import(path.join(ROOT, 'src/plugins', name, hookPath))).default as () => Promise<StorageProvider>
    providers.push(await hook())
  }

  return providers
}

interface ComposeService {
  image?: string
  build?: {context: string; dockerfile: string}
  environment?: Record<string, string | number | boolean> | string[]
  command?: string[] | string
  secrets?: string[]
  volumes?: string[]
  ports?: string[]
}

function composeServices(file: string): {services: Record<string, ComposeService>; secrets: Record<string, {file: string}>} {
  return parseYaml(read(file))
}

function environmentOf(service: ComposeService): Record<string, string> {
  const entries = Array.isArray(service.environment)
    ? service.environment.map((line) => line.split('=', 2) as [string, string])
    : Object.entries(service.environment ?? {}).map(([key, value]) => [key, String(value)] as [string, string])
  return Object.fromEntries(entries)
}

const isDbb = (service: ComposeService) => service.build?.dockerfile === 'docker/Dockerfile'
/** `${VAR:?message}` is filled in by compose from .env or the shell: stand in a valid secret-like value. */
const interpolated = (value: string) => value.replace(/\$\{[^}]*\}/g, 'x'.repeat(64))

describe('docker/Dockerfile matches the CLI it packages', () => {
  it('runs `dbb` (a link to bin/run.js) under tini as its entrypoint, and its CMD is a real command', () => {
    // tini as pid 1 reaps what dbb does not (README, "pid 1 is tini"); the image carries it.
    expect(argsOf('ENTRYPOINT').map((args) => JSON.parse(args))).toEqual([['tini', '-s', '--', 'dbb']])
    expect(argsOf('RUN').join('\n')).toMatch(/apt-get install [^\n]* tini/)
    expect(argsOf('RUN').join('\n')).toContain('/usr/bin/tini /opt/pgclient/')
    expect(argsOf('RUN', runtime).join('\n')).toContain('ln -s /app/bin/run.js /usr/local/bin/dbb')
    expect(argsOf('WORKDIR', runtime)).toEqual(['/app'])
    const runJs = path.join(ROOT, 'bin/run.js')
    expect(readFileSync(runJs, 'utf8')).toMatch(/^#!\/usr\/bin\/env node/)
    expect(statSync(runJs).mode & 0o111).not.toBe(0)

    const [cmd] = argsOf('CMD').map((args) => JSON.parse(args) as string[])
    const commandId = cmd.filter((word) => !word.startsWith('-')).join(':')
    const manifest = JSON.parse(read('oclif.manifest.json'))
    expect(Object.keys(manifest.commands)).toContain(commandId)
    expect(commandId).toBe('serve')
  })

  it('probes GET /health on the default HTTP_PORT, a route dbb serve answers without a token', async () => {
    const [healthcheck] = argsOf('HEALTHCHECK')
    const match = /http:\/\/127\.0\.0\.1:\$\{HTTP_PORT:-(\d+)\}(\/[\w/-]*)/.exec(healthcheck)
    expect(match).not.toBeNull()
    const [, defaultPort, route] = match as RegExpExecArray
    expect(loadConfig(['server'], {API_TOKEN: 'x'.repeat(64)}).server.port).toBe(Number(defaultPort))
    expect(argsOf('EXPOSE', runtime)).toEqual([defaultPort])

    // The real app, with the database unreachable: /health must answer (503), not 404 or 401.
    const deps = {
      apiToken: 'x'.repeat(64),
      storage: {name: 'local', location: '/backups', health: async () => {}},
      database: {host: '127.0.0.1', port: await freePort(), user: 'postgres', database: 'app', password: 'unused'},
      namePrefix: 'backup',
      logger: createLogger({level: 'silent'}),
      sidecarCache: new Map(),
    } as unknown as AppDependencies
    const server = createApp(deps).listen(0, '127.0.0.1')
    await new Promise((resolve) => server.once('listening', resolve))
    try {
      const response = await fetch(`http://127.0.0.1:${(server.address() as AddressInfo).port}${route}`)
      expect(response.status).toBe(503)
      expect(await response.json()).toMatchObject({status: 'unavailable', checks: {postgres: {ok: false}, storage: {ok: true}}})
    } finally {
      server.close()
    }
  })

  it('builds reproducibly: pinned base images, no frontend pull, no key fetched unverified, multi-arch safe', () => {
    // A `# syntax=` line makes BuildKit pull a frontend image on every build.
    expect(read('docker/Dockerfile')).not.toMatch(/^#\s*syntax\s*=/im)
    const defaults = Object.fromEntries(argsOf('ARG').filter((args) => args.includes('=')).map((args) => args.split('=', 2)))
    expect(defaults.NODE_IMAGE).toMatch(/^node:\d+\.\d+\.\d+-bookworm-slim$/)
    expect(defaults.DEBIAN_IMAGE).toMatch(/^debian:\d+\.\d+-slim$/)
    // The image's Node satisfies package.json's engines floor.
    const floor = Number(/>=\s*(\d+)/.exec(JSON.parse(read('package.json')).engines.node)?.[1])
    expect(Number(/^node:(\d+)/.exec(defaults.NODE_IMAGE)?.[1])).toBeGreaterThanOrEqual(floor)
    expect(argsOf('FROM').every((from) => /\$\{(NODE_IMAGE|DEBIAN_IMAGE)\}|^deps AS/.test(from))).toBe(true)
    expect(defaults.PG_CLIENT_SOURCE).toBe('pgdg')
    expect(defaults.PG_CLIENT_VERSION).toBe('17')
    const install = argsOf('RUN').join('\n')
    // The PostgreSQL repository is set up by Debian's postgresql-common, which ships its key.
    expect(install).toContain('/usr/share/postgresql-common/pgdg/apt.postgresql.org.sh -y')
    expect(install).toContain('postgresql-client-${PG_CLIENT_VERSION}')
    expect(install).toContain('debian) client=postgresql-client-15')
    expect(install).not.toMatch(/\b(curl|wget)\b/)
    // Multi-arch: nothing downloaded per architecture, only apt packages (which exist for amd64 and arm64).
    expect(install).not.toMatch(/amd64|x86_64|aarch64|arm64/)
  })

  it('runs lean and as OpenShift expects: Node binary only, no Perl, any uid in group 0, no anonymous volume', () => {
    expect(stages.at(-1)?.[0].args).toBe('${DEBIAN_IMAGE} AS runtime')
    const runtimeCopies = argsOf('COPY', runtime).join('\n')
    expect(runtimeCopies).toContain('--from=node /usr/local/bin/node /usr/local/bin/node')
    expect(runtimeCopies).not.toMatch(/node_modules\/npm|yarn/)
    // Production dependencies come from the deps stage, before (and cached apart from) the sources.
    const copies = argsOf('COPY', runtime)
    expect(copies.findIndex((args) => args.startsWith('--from=deps /app/node_modules'))).toBeLessThan(copies.findIndex((args) => args.includes('/app/dist')))
    expect(argsOf('RUN', runtime).join('\n')).toContain('install -d -o 1000 -g 0 -m 2770 /backups')
    expect(argsOf('USER', runtime)).toEqual(['1000:0'])
    expect(argsOf('ENV', runtime).join(' ')).toContain('HOME=/tmp')
    expect(argsOf('VOLUME')).toEqual([])
  })

  it('copies every workspace plugin and every file the build reads, none of them excluded by .dockerignore', () => {
    const copies = argsOf('COPY').filter((args) => !args.startsWith('--from'))
    const sources = copies.flatMap((args) => args.split(/\s+/).slice(0, -1))
    const runtimeCopies = argsOf('COPY', runtime).join('\n')
    for (const name of readdirSync(path.join(ROOT, 'src/plugins'))) {
      expect(sources).toContain(`src/plugins/${name}/package.json`)
      expect(runtimeCopies).toContain(`/app/src/plugins/${name}/dist`)
    }

    for (const source of sources) expect(existsSync(path.join(ROOT, source))).toBe(true)
    const ignored = read('.dockerignore')
      .split('\n')
      .map((line) => line.trim())
      .filter((line) => line && !line.startsWith('#'))
    // As Docker reads it: the last line that matches decides, and `!` takes a path back in.
    const excluded = (source: string) =>
      ignored.reduce((out, line) => {
        const pattern = line.replace(/^!/, '')
        return source === pattern || source.startsWith(`${pattern}/`) ? !line.startsWith('!') : out
      }, false)
    for (const source of sources) expect({source, excluded: excluded(source)}).toEqual({source, excluded: false})

    expect(JSON.parse(read('package.json')).scripts.build).toMatch(/oclif manifest/)
    expect(argsOf('RUN', stages.find((stage) => stage[0].args.endsWith('AS build'))).join('\n')).toContain('npm run build')
  })
})

describe.each(COMPOSE_FILES)('%s matches dbb and the images it runs', (file) => {
  const {services, secrets} = composeServices(file)
  const dbbEntries = Object.entries(services).filter(([, service]) => isDbb(service))
  const [, dbb] = dbbEntries[0] ?? []

  it('has one dbb service, built from docker/Dockerfile, running a real command', () => {
    expect(dbbEntries).toHaveLength(1)
    expect(existsSync(path.join(ROOT, dbb.build?.context ?? '.', dbb.build?.dockerfile ?? ''))).toBe(true)
    if (dbb.command !== undefined) {
      const words = Array.isArray(dbb.command) ? dbb.command : dbb.command.split(/\s+/)
      const manifest = JSON.parse(read('oclif.manifest.json'))
      expect(Object.keys(manifest.commands)).toContain(words.filter((word) => !word.startsWith('-')).join(':'))
    }
  })

  it('sets on dbb only variables dbb knows (settings catalog or an installed storage provider), and they validate', async () => {
    const providers = await workspaceProviders()
    const specs = [...SETTING_NAMES.map((name) => setting(name)), ...providers.flatMap((provider) => provider.settings)]
    // A secret setting X may come from the file X_FILE names (src/secrets.ts).
    const known = new Set<string>([...specs.map((spec) => spec.env), ...specs.filter((spec) => spec.secret).map((spec) => fileVariable(spec.env))])
    const environment = environmentOf(dbb)
    expect(Object.keys(environment).filter((name) => !known.has(name))).toEqual([])

    const values = Object.fromEntries(Object.entries(environment).map(([name, value]) => [name, interpolated(value)]))
    const sections: Section[] = ['database', 'namePrefix', 'retention', 'storageBackend', 'logging', 'server', 'schedule']
    const config = loadConfig(sections, values, {})
    const provider = providers.find((candidate) => candidate.name === config.storageBackend)
    expect(provider).toBeDefined()
    const backend = await provider?.create(values, {logger: createLogger({level: 'silent'})})
    await backend?.close?.()
  })

  it('passes secrets by reference only: the pgpass secret where dbb looks for it, nothing secret inline', async () => {
    const environment = environmentOf(dbb)
    expect(environment.DB_PASSWORD).toBeUndefined()
    expect(dbb.secrets).toContain('pgpass')
    expect(secrets.pgpass?.file).toBeDefined()
    expect(DEFAULT_PASSFILE).toBe('/run/secrets/pgpass')
    const providerSettings = (await workspaceProviders()).flatMap((provider) => provider.settings)
    const secretVariables = [...SETTING_NAMES.map((name) => setting(name)), ...providerSettings].filter((spec) => spec.secret).map((spec) => spec.env)
    expect(secretVariables).toEqual(expect.arrayContaining(['DB_PASSWORD', 'API_TOKEN', 'AWS_SECRET_ACCESS_KEY']))
    for (const [name, value] of Object.entries(environment)) {
      // Filled in by compose from .env or the shell, and required to be set (`:?`).
      if (secretVariables.includes(name)) expect({name, value}).toEqual({name, value: expect.stringMatching(/^\$\{[A-Z_]+:\?[^}]+\}$/)})
    }
  })

  it('sets on other services only variables their images document', () => {
    for (const [name, service] of Object.entries(services)) {
      if (isDbb(service)) continue
      const image = (service.image ?? '').replace(/:[^/]*$/, '')
      const allowed = OTHER_IMAGES_VARIABLES[image] ?? {}
      const unknown = Object.keys(environmentOf(service)).filter((variable) => !(variable in allowed))
      expect({service: name, unknown}).toEqual({service: name, unknown: []})
    }
  })

  it('publishes the port dbb serve listens on, and stores local backups in the image volume', () => {
    const port = String(loadConfig(['server'], {API_TOKEN: 'x'.repeat(64)}).server.port)
    expect(environmentOf(dbb).HTTP_PORT ?? port).toBe(port)
    expect((dbb.ports ?? []).some((mapping) => mapping.endsWith(`:${port}`))).toBe(true)
    const environment = environmentOf(dbb)
    if (environment.STORAGE_BACKEND === 'local') {
      expect(environment.BACKUP_LOCAL_DIR).toBe('/backups')
      expect((dbb.volumes ?? []).some((volume) => volume.split(':')[1] === '/backups')).toBe(true)
    }
  })
})

describe('.github/workflows/docker.yml', () => {
  it('builds docker/Dockerfile for linux/amd64 and linux/arm64 and pushes on a version tag', () => {
    const workflow = parseYaml(read('.github/workflows/docker.yml'))
    expect(workflow.on.push.tags).toEqual(['v*.*.*'])
    const steps: {uses?: string; with?: Record<string, unknown>}[] = Object.values(workflow.jobs).flatMap((job) => (job as {steps: never[]}).steps)
    const publish = steps.find((step) => step.uses?.startsWith('docker/build-push-action') && step.with?.push === true)
    expect(publish?.with).toMatchObject({file: 'docker/Dockerfile', platforms: 'linux/amd64,linux/arm64'})
    expect(existsSync(path.join(ROOT, String(publish?.with?.file)))).toBe(true)
  })

  it('pins every action to a release version, not a moving major tag', () => {
    const workflow = parseYaml(read('.github/workflows/docker.yml'))
    const uses = Object.values(workflow.jobs).flatMap((job) => (job as {steps: {uses?: string}[]}).steps.flatMap((step) => step.uses ?? []))
    expect(uses.length).toBeGreaterThan(0)
    expect(uses.filter((action) => !/@v\d+\.\d+\.\d+$/.test(action))).toEqual([])
  })
})
