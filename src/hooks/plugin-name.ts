import {Hook} from '@oclif/core'

/** The npm naming convention of third-party storage plugins: `dbb-storage-<name>` (keyword `dbb-storage`). */
export const STORAGE_PLUGIN_PREFIX = 'dbb-storage-'

/**
 * `dbb plugins install <short name>`: oclif expands a short name only to a scoped package
 * (`oclif.scope` + `pluginPrefix` in package.json: `webdav` → `@dbb/storage-webdav`, looked up on
 * npm) and, when that does not exist, installs the name as given — `dbb plugins install webdav`
 * installed the unrelated npm library "webdav". This hook runs after that expansion and before the
 * install: a bare name that was not expanded becomes `dbb-storage-<name>`, the convention
 * third-party backends are published under. Full names (`dbb-storage-x`, `@me/dbb-storage-x`),
 * paths and URLs are left alone.
 */
const hook: Hook<'plugins:preinstall'> = async function (options) {
  const plugin = options.plugin as {type: string; name?: string}
  if (plugin.type !== 'npm' || !plugin.name) return
  const {name} = plugin
  if (name.startsWith('@') || name.startsWith(STORAGE_PLUGIN_PREFIX) || name.includes('/')) return
  plugin.name = `${STORAGE_PLUGIN_PREFIX}${name}`
  this.log(`${options.config.bin}: "${name}" is short for the storage plugin ${plugin.name}`)
}

export default hook
