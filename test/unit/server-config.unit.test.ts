import {loadConfig} from '../../src/config'
import {ConfigError} from '../../src/errors'

function configError(run: () => unknown): ConfigError {
  try {
    run()
  } catch (error) {
    if (error instanceof ConfigError) return error
    throw error
  }

  throw new Error('expected a ConfigError')
}

const TOKEN = 'f'.repeat(64)

describe('server and schedule settings of dbb serve', () => {
  it('has defaults: port 8080 on 0.0.0.0, 30 s grace, a backup every 24 h', () => {
    expect(loadConfig(['server', 'schedule'], {API_TOKEN: TOKEN})).toEqual({
      server: {apiToken: TOKEN, port: 8080, host: '0.0.0.0', shutdownGraceMs: 30_000},
      schedule: {kind: 'interval', intervalMs: 24 * 3600 * 1000},
    })
  })

  it.each([
    ['PT24H', 24 * 3600 * 1000],
    ['P1D', 24 * 3600 * 1000],
    ['PT30M', 30 * 60 * 1000],
    ['12h', 12 * 3600 * 1000],
    ['30m', 30 * 60 * 1000],
  ])('reads BACKUP_INTERVAL=%s', (text, milliseconds) => {
    expect(loadConfig(['schedule'], {BACKUP_INTERVAL: text}).schedule).toEqual({kind: 'interval', intervalMs: milliseconds})
  })

  it('reads a cron schedule with its time zone', () => {
    expect(loadConfig(['schedule'], {BACKUP_SCHEDULE: ' 0 3 * * * ', TZ: 'Europe/Berlin'}).schedule).toEqual({
      kind: 'cron',
      expression: '0 3 * * *',
      timezone: 'Europe/Berlin',
    })
  })

  it('requires API_TOKEN, and refuses one shorter than 16 characters with a way to generate one', () => {
    expect(configError(() => loadConfig(['server'], {})).message).toBe('API_TOKEN: is required (example: API_TOKEN=$(openssl rand -hex 32))')
    const short = configError(() => loadConfig(['server'], {API_TOKEN: 'short-secret'}))
    expect(short.message).toContain('API_TOKEN: must be at least 16 characters; generate one with: openssl rand -hex 32')
    expect(short.message).not.toContain('short-secret')
  })

  it('refuses BACKUP_INTERVAL together with BACKUP_SCHEDULE, naming both', () => {
    const error = configError(() => loadConfig(['schedule'], {BACKUP_INTERVAL: '24h', BACKUP_SCHEDULE: '0 3 * * *'}))
    expect(error.issues).toHaveLength(1)
    expect(error.message).toMatch(/BACKUP_SCHEDULE: cannot be combined with BACKUP_INTERVAL/)
  })

  it.each([
    [{BACKUP_SCHEDULE: '0 3 * *'}, /BACKUP_SCHEDULE: is not a cron expression.*five, six, or seven/],
    [{BACKUP_SCHEDULE: '61 * * * *'}, /BACKUP_SCHEDULE: is not a cron expression.*minute/],
    [{BACKUP_INTERVAL: 'daily'}, /BACKUP_INTERVAL: "daily" is not a duration \(use e.g. 24h/],
    [{BACKUP_INTERVAL: '0s'}, /BACKUP_INTERVAL: "0s" is not a duration/],
    [{BACKUP_SCHEDULE: '0 3 * * *', TZ: 'Mars/Olympus'}, /TZ: is not an IANA time zone name \(example: TZ=Europe\/Berlin\)/],
  ])('explains a bad schedule: %j', (values, expected) => {
    expect(configError(() => loadConfig(['schedule'], values)).message).toMatch(expected)
  })

  // Issue 11 hole 9: BACKUP_INTERVAL=1ms started ~40 back-to-back backups in 8 s.
  it.each([
    [{BACKUP_INTERVAL: '1ms'}, 'BACKUP_INTERVAL'],
    [{BACKUP_INTERVAL: '59s'}, 'BACKUP_INTERVAL'],
    [{BASE_BACKUP_INTERVAL: '30s'}, 'BASE_BACKUP_INTERVAL'],
  ])('refuses a schedule interval under 1 minute, naming the variable and an example: %j', (values, variable) => {
    const error = configError(() => loadConfig(['schedule', 'archiving'], values))
    expect(error.exitCode).toBe(2)
    expect(error.message).toMatch(new RegExp(`^${variable}: must be at least 1 minute .*\\(example: ${variable}=`))
  })

  it.each([
    ['* * * * * *', 'every second'],
    ['*/30 * * * * *', 'every 30 s'],
    ['0,59 * * * * *', 'twice a minute, once at the minute boundary'],
    ['0-1 0 3 * * *', 'twice at 03:00, once a day otherwise'],
    ['* 0 3 29 2 *', 'sixty times on leap days only'],
  ])('refuses a cron schedule that fires more than once a minute: %s (%s)', (expression) => {
    for (const variable of ['BACKUP_SCHEDULE', 'BASE_BACKUP_SCHEDULE', 'DRILL_SCHEDULE']) {
      const error = configError(() => loadConfig(['schedule', 'archiving', 'drill'], {[variable]: expression}))
      expect(error.message).toMatch(new RegExp(`^${variable}: fires more than once a minute`))
    }
  })

  it('each schedule pair: both set is refused naming the pair, a bad TZ is named as TZ, and the cron wins over nothing', () => {
    for (const [interval, cron] of [
      ['BACKUP_INTERVAL', 'BACKUP_SCHEDULE'],
      ['BASE_BACKUP_INTERVAL', 'BASE_BACKUP_SCHEDULE'],
      ['DRILL_INTERVAL', 'DRILL_SCHEDULE'],
    ]) {
      expect(configError(() => loadConfig(['schedule', 'archiving', 'drill'], {[interval]: '1h', [cron]: '0 3 * * *'})).message).toMatch(
        new RegExp(`^${cron}: cannot be combined with ${interval}: set only one`),
      )
      expect(configError(() => loadConfig(['schedule', 'archiving', 'drill'], {[cron]: '0 3 * * *', TZ: 'Mars/Olympus'})).message).toMatch(/^TZ: is not an IANA time zone name/)
    }

    const config = loadConfig(['schedule', 'archiving', 'drill'], {BASE_BACKUP_SCHEDULE: '0 3 * * *', DRILL_INTERVAL: '7d', TZ: 'Europe/Paris'})
    expect(config.schedule).toEqual({kind: 'interval', intervalMs: 24 * 3_600_000})
    expect(config.archiving.baseBackupSchedule).toEqual({kind: 'cron', expression: '0 3 * * *', timezone: 'Europe/Paris'})
    expect(config.drill.schedule).toEqual({kind: 'interval', intervalMs: 7 * 24 * 3_600_000})
  })

  it.each([['1m'], ['60s'], ['PT1M']])('accepts the minimum interval %s', (text) => {
    expect(loadConfig(['schedule'], {BACKUP_INTERVAL: text}).schedule).toEqual({kind: 'interval', intervalMs: 60_000})
  })

  it.each([['* * * * *'], ['30 * * * * *'], ['0 0 3 * * *'], ['@hourly']])('accepts a cron schedule at most once a minute: %s', (expression) => {
    expect(loadConfig(['schedule'], {BACKUP_SCHEDULE: expression}).schedule).toMatchObject({kind: 'cron'})
  })

  it.each([
    [{HTTP_PORT: '80000'}, /HTTP_PORT: must be at most 65535 \(example: HTTP_PORT=8080\)/],
    [{HTTP_PORT: 'http'}, /HTTP_PORT: must be a whole number/],
    [{SHUTDOWN_GRACE: 'soon'}, /SHUTDOWN_GRACE: "soon" is not a duration/],
  ])('explains a bad server setting: %j', (values, expected) => {
    expect(configError(() => loadConfig(['server'], {API_TOKEN: TOKEN, ...values})).message).toMatch(expected)
  })
})
