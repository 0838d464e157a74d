import type {Config} from '@oclif/core'

import {ConfigError, StoragePluginError, asConfigError, errorMessage} from '../errors'
import {SETTING_NAMES, setting} from '../settings'
import {
  CONTRACT_VERSION,
  MIN_SUPPORTED_CONTRACT_VERSION,
  STORAGE_PROVIDER_HOOK,
  StorageBackend,
  StorageProvider,
  StorageSetting,
  backendProblems,
  providerProblems,
} from './contract'
import {withTimeBound} from './time-bound'

export interface ProviderRegistry {
  providers: Map<string, StorageProvider>
  /** The plugin each provider came from, by provider name. */
  plugins: Map<string, string>
  /** Providers that were found but cannot be used (invalid fields, an incompatible contract version), by the name they declare: why. */
  refused: Map<string, string>
  /** Plugins whose hook failed or returned an unusable provider, and settings that were ignored: warnings. */
  problems: string[]
}

/**
 * Finds the installed storage backends: every oclif plugin (core, user-installed or linked) that
 * answers the `dbb:storage-provider` hook. Hooks run in parallel, so results are keyed by the name
 * each provider declares, never by order; two plugins claiming one name is reported, not guessed.
 * A provider with an invalid field or built for an incompatible contract version is refused with
 * the reason (field by field); selecting it fails with that reason instead of "unknown backend".
 */
export async function discoverProviders(config: Config): Promise<ProviderRegistry> {
  const result = await config.runHook(STORAGE_PROVIDER_HOOK, {})
  const registry: ProviderRegistry = {providers: new Map(), plugins: new Map(), refused: new Map(), problems: []}
  for (const failure of result.failures) {
    registry.problems.push(`plugin ${failure.plugin.name} failed to load its storage backend: ${errorMessage(failure.error).split('\n')[0]}`)
  }

  for (const {plugin, result: candidate} of result.successes) addProvider(registry, plugin.name, candidate)
  return registry
}

/** Checks one hook answer and adds it to the registry (or records why not). */
export function addProvider(registry: ProviderRegistry, plugin: string, candidate: unknown): void {
  const declaredName = typeof (candidate as StorageProvider | undefined)?.name === 'string' ? (candidate as StorageProvider).name : undefined
  const refuse = (reason: string) => {
    registry.problems.push(reason)
    if (declaredName) registry.refused.set(declaredName.toLowerCase(), reason)
  }

  const problems = providerProblems(candidate)
  if (problems.length > 0) {
    refuse(`plugin ${plugin} answered ${STORAGE_PROVIDER_HOOK} with an invalid storage provider: ${problems.join('; ')}`)
    return
  }

  const provider = candidate as StorageProvider
  const version = provider.contractVersion ?? 1
  if (version > CONTRACT_VERSION || version < MIN_SUPPORTED_CONTRACT_VERSION) {
    refuse(
      `plugin ${plugin} (storage backend "${provider.name}") was built for storage contract version ${version}; this dbb supports versions ` +
        `${MIN_SUPPORTED_CONTRACT_VERSION} to ${CONTRACT_VERSION} (@dbb/storage-contract ${CONTRACT_VERSION}): ` +
        (version > CONTRACT_VERSION ? 'upgrade dbb, or install a release of the plugin built for an older contract' : 'install a release of the plugin built for a newer contract'),
    )
    return
  }

  if (registry.providers.has(provider.name)) {
    registry.problems.push(`storage backend "${provider.name}" is provided by more than one plugin (${plugin}); keeping the first`)
    return
  }

  registry.providers.set(provider.name, {...provider, settings: ownSettings(registry, plugin, provider.settings)})
  registry.plugins.set(provider.name, plugin)
}

/**
 * A plugin's settings without those that are dbb's own (DB_PASSWORD, STORAGE_BACKEND, …, by variable
 * or flag): declared by a plugin they would replace core's flag — and its secrecy — and hand the
 * database password to a storage plugin. Each is ignored with a warning.
 */
function ownSettings(registry: ProviderRegistry, plugin: string, settings: StorageSetting[]): StorageSetting[] {
  const coreFlags = new Set(['json', 'help', 'storage', ...SETTING_NAMES.map((name) => setting(name).flag)])
  return settings.filter((spec) => {
    const clash = (SETTING_NAMES as readonly string[]).includes(spec.env) ? spec.env : coreFlags.has(spec.flag) ? `--${spec.flag}` : undefined
    if (clash) {
      registry.problems.push(
        `plugin ${plugin} declares ${clash}, a setting of dbb itself; ignored (a backend gets only its own settings: give it a name of its own, such as ${spec.env.startsWith('DB_') || spec.env === 'STORAGE_BACKEND' ? `MYSTORE_${spec.env.replace(/^DB_|^STORAGE_/, '')}` : `MYSTORE_${spec.env}`})`,
      )
    }

    return clash === undefined
  })
}

export function selectProvider(registry: ProviderRegistry, name: string): StorageProvider {
  const provider = registry.providers.get(name)
  if (provider) return provider
  const refused = registry.refused.get(name)
  if (refused) throw new ConfigError([{variable: 'STORAGE_BACKEND', message: `storage backend "${name}" cannot be used: ${refused}`}])
  const installed = [...registry.providers.keys()].sort()
  throw new ConfigError([
    {
      variable: 'STORAGE_BACKEND',
      message: `unknown storage backend "${name}"; installed: ${installed.length > 0 ? installed.join(', ') : 'none'}${
        registry.problems.length > 0 ? ` (${registry.problems.join('; ')})` : ''
      }`,
      example: installed[0] ?? 'local',
    },
  ])
}

export function allProviderSettings(registry: ProviderRegistry): StorageSetting[] {
  const byEnv = new Map<string, StorageSetting>()
  for (const provider of registry.providers.values()) {
    for (const setting of provider.settings) byEnv.set(setting.env, setting)
  }

  return [...byEnv.values()]
}

/**
 * Creates the backend with the provider's own settings only, checks that what `create` returned
 * has every method of the contract (a missing `list()` is named here, with the plugin, instead of
 * failing later as "storage.list is not a function"), and enforces the contract's time bound
 * around every call (src/storage/time-bound.ts).
 */
export async function createBackend(
  provider: StorageProvider,
  settings: Record<string, string | undefined>,
  context: Parameters<StorageProvider['create']>[1],
  plugin = `the plugin of storage backend "${provider.name}"`,
): Promise<StorageBackend> {
  const values = Object.fromEntries(provider.settings.map((setting) => [setting.env, settings[setting.env]]))
  let backend: StorageBackend
  try {
    backend = await provider.create(values, context)
  } catch (error) {
    throw asConfigError(error) ?? error
  }

  const problems = backendProblems(backend)
  if (problems.length > 0) {
    throw new StoragePluginError(
      `storage plugin ${plugin}: the backend "${provider.name}" returned by create() does not implement the storage contract: ${problems.join('; ')} ` +
        `(see @dbb/storage-contract; test it with @dbb/storage-test-suite)`,
    )
  }

  return withTimeBound(backend, {plugin})
}
