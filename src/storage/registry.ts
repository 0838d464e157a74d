import type {Config} from '@oclif/core'

import {ConfigError, asConfigError, errorMessage} from '../errors'
import {STORAGE_PROVIDER_HOOK, StorageBackend, StorageProvider, StorageSetting} from './contract'

export interface ProviderRegistry {
  providers: Map<string, StorageProvider>
  /** The plugin each provider came from, by provider name. */
  plugins: Map<string, string>
  /** Plugins whose hook failed or returned something that is not a provider. */
  problems: string[]
}

/**
 * Finds the installed storage backends: every oclif plugin (core, user-installed or linked) that
 * answers the `dbb:storage-provider` hook. Hooks run in parallel, so results are keyed by the name
 * each provider declares, never by order; two plugins claiming one name is reported, not guessed.
 */
export async function discoverProviders(config: Config): Promise<ProviderRegistry> {
  const result = await config.runHook(STORAGE_PROVIDER_HOOK, {})
  const providers = new Map<string, StorageProvider>()
  const plugins = new Map<string, string>()
  const problems: string[] = []
  for (const failure of result.failures) {
    problems.push(`plugin ${failure.plugin.name} failed to load its storage backend: ${errorMessage(failure.error).split('\n')[0]}`)
  }

  for (const {plugin, result: candidate} of result.successes) {
    if (!isProvider(candidate)) {
      problems.push(`plugin ${plugin.name} answered ${STORAGE_PROVIDER_HOOK} without a valid storage provider`)
      continue
    }

    const existing = providers.get(candidate.name)
    if (existing) {
      problems.push(`storage backend "${candidate.name}" is provided by more than one plugin (${plugin.name}); keeping the first`)
      continue
    }

    providers.set(candidate.name, candidate)
    plugins.set(candidate.name, plugin.name)
  }

  return {providers, plugins, problems}
}

function isProvider(value: unknown): value is StorageProvider {
  const candidate = value as StorageProvider | undefined
  return (
    typeof candidate === 'object' &&
    candidate !== null &&
    typeof candidate.name === 'string' &&
    /^[a-z0-9][a-z0-9-]*$/.test(candidate.name) &&
    Array.isArray(candidate.settings) &&
    typeof candidate.create === 'function'
  )
}

export function selectProvider(registry: ProviderRegistry, name: string): StorageProvider {
  const provider = registry.providers.get(name)
  if (provider) return provider
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

export async function createBackend(
  provider: StorageProvider,
  settings: Record<string, string | undefined>,
  context: Parameters<StorageProvider['create']>[1],
): Promise<StorageBackend> {
  const values = Object.fromEntries(provider.settings.map((setting) => [setting.env, settings[setting.env]]))
  try {
    return await provider.create(values, context)
  } catch (error) {
    throw asConfigError(error) ?? error
  }
}
