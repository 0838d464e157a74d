import {loadConfig} from '../../src/config'
import {DEFAULT_COMPRESSION_LEVEL, defaultCompressionThreads, threadPoolSize} from '../../src/compress/defaults'
import {ConfigError} from '../../src/errors'

describe('COMPRESSION_LEVEL and COMPRESSION_THREADS', () => {
  it('default to level 1 and the cores available, below the thread pool size', () => {
    const {compression} = loadConfig(['compression'], {})
    expect(compression.level).toBe(DEFAULT_COMPRESSION_LEVEL)
    expect(DEFAULT_COMPRESSION_LEVEL).toBe(1)
    expect(compression.threads).toBe(defaultCompressionThreads())
    expect(compression.threads).toBeGreaterThanOrEqual(1)
    expect(compression.threads).toBeLessThan(threadPoolSize())
  })

  it('take valid values', () => {
    expect(loadConfig(['compression'], {COMPRESSION_LEVEL: '9', COMPRESSION_THREADS: '1'}).compression).toEqual({codec: 'gzip', level: 9, threads: 1})
    expect(loadConfig(['compression'], {COMPRESSION: 'zstd', COMPRESSION_LEVEL: '19', COMPRESSION_THREADS: '1'}).compression).toEqual({codec: 'zstd', level: 19, threads: 1})
    expect(loadConfig(['compression'], {COMPRESSION: ' Zstd '}).compression).toMatchObject({codec: 'zstd', level: 1})
  })

  it.each([
    [{COMPRESSION_LEVEL: '0'}, 'COMPRESSION_LEVEL: must be from 1 to 9 with COMPRESSION=gzip, got 0'],
    [{COMPRESSION_LEVEL: '10'}, 'COMPRESSION_LEVEL: must be from 1 to 9 with COMPRESSION=gzip, got 10'],
    [{COMPRESSION: 'zstd', COMPRESSION_LEVEL: '20'}, 'COMPRESSION_LEVEL: must be from 1 to 19 with COMPRESSION=zstd, got 20'],
    [{COMPRESSION_LEVEL: 'fast'}, 'COMPRESSION_LEVEL: must be a whole number (1–9 for gzip, 1–19 for zstd)'],
    [{COMPRESSION_THREADS: '0'}, 'COMPRESSION_THREADS: must be at least 1'],
    [{COMPRESSION_THREADS: '200'}, "COMPRESSION_THREADS: must be below libuv's thread pool size"],
  ])('reject %p with a message naming the variable and an example', (values, message) => {
    let error: unknown
    try {
      loadConfig(['compression'], values)
    } catch (caught) {
      error = caught
    }

    expect(error).toBeInstanceOf(ConfigError)
    expect((error as ConfigError).message).toContain(message)
    expect((error as ConfigError).message).toMatch(/example: COMPRESSION_(LEVEL|THREADS)=\d/)
    expect((error as ConfigError).exitCode).toBe(2)
  })
})
