import hook from '../../src/hooks/plugin-name'

/**
 * `dbb plugins install <short name>`: after oclif's own expansion (scope/pluginPrefix →
 * @dbb/storage-<name>, used only when npm has it), a bare name that is left becomes
 * dbb-storage-<name> — not the unrelated npm package of that name.
 */
describe('plugins:preinstall: short names of storage plugins', () => {
  const run = async (plugin: {type: string; name?: string; url?: string}) => {
    const lines: string[] = []
    const context = {log: (line: string) => lines.push(line)} as unknown as ThisParameterType<typeof hook>
    await hook.call(context, {plugin, config: {bin: 'dbb'}} as unknown as Parameters<typeof hook>[0])
    return {plugin, lines}
  }

  it('turns a bare name into dbb-storage-<name> and says so', async () => {
    const {plugin, lines} = await run({type: 'npm', name: 'webdav'})
    expect(plugin.name).toBe('dbb-storage-webdav')
    expect(lines).toEqual(['dbb: "webdav" is short for the storage plugin dbb-storage-webdav'])
  })

  it.each(['dbb-storage-webdav', '@dbb/storage-webdav', '@acme/dbb-storage-gcs'])('leaves the full name %s alone', async (name) => {
    expect((await run({type: 'npm', name})).plugin.name).toBe(name)
  })

  it('leaves paths, tarballs and repositories alone', async () => {
    const tarball = {type: 'repo', url: 'file:/tmp/dbb-storage-x-1.0.0.tgz'}
    expect((await run(tarball)).plugin).toEqual({type: 'repo', url: 'file:/tmp/dbb-storage-x-1.0.0.tgz'})
  })
})
