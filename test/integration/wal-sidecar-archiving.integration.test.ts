import * as fs from 'node:fs/promises'
import * as http from 'node:http'
import type {AddressInfo} from 'node:net'

import {listBackups} from '../../src/backup/metadata'
import {loadConfig} from '../../src/config'
import {createLogger} from '../../src/logger'
import {LocalBackend} from '../../src/plugins/local/src/local-backend'
import {ArchivingService, startArchivingService} from '../../src/wal/sidecar-archiving'
import {tempDir} from '../helpers/cli'
import {PgCluster, startPostgres} from '../helpers/postgres'
import {waitFor} from '../helpers/wal'

/** The dbb serve side of continuous archiving, driven in-process against a real server and a local Slack stand-in. */
describe('scheduled base backups, scheduled checks and Slack alerts (real PostgreSQL)', () => {
  let cluster: PgCluster
  let storeDir: string
  let service: ArchivingService | undefined
  let slack: http.Server
  let slackUrl: string
  const messages: {channel: string; text: string}[] = []

  beforeAll(async () => {
    cluster = await startPostgres()
    storeDir = await tempDir('dbb-archiving-store-')
    slack = http.createServer((request, response) => {
      let body = ''
      request.setEncoding('utf8').on('data', (chunk: string) => (body += chunk))
      request.on('end', () => {
        messages.push(JSON.parse(body))
        response.writeHead(200, {'content-type': 'application/json'}).end('{"ok":true}')
      })
    })
    await new Promise<void>((resolve) => slack.listen(0, '127.0.0.1', resolve))
    slackUrl = `http://127.0.0.1:${(slack.address() as AddressInfo).port}/api`
  })

  afterEach(async () => {
    await service?.stop()
    service = undefined
    messages.length = 0
  })

  afterAll(async () => {
    await cluster?.destroy()
    await fs.rm(storeDir, {recursive: true, force: true})
    await new Promise((resolve) => slack.close(resolve))
  })

  const config = (values: Record<string, string>) =>
    loadConfig(['database', 'namePrefix', 'retention', 'schedule', 'baseBackup', 'archiving', 'walStreaming', 'check', 'notify'], {
      ...cluster.dbbEnv(),
      SLACK_TOKEN: 'xoxb-archiving-test',
      SLACK_API_URL: slackUrl,
      ...values,
    })
  const start = (values: Record<string, string>) =>
    startArchivingService({config: config(values), storage: new LocalBackend(storeDir), logger: createLogger({format: 'json', level: 'silent'})})

  it('takes the first scheduled base backup at once when none exists, and schedules the next one an interval later', async () => {
    service = await start({BASE_BACKUP_INTERVAL: '7d'})
    const backups = await waitFor('a scheduled base backup', async () => {
      const found = await listBackups(new LocalBackend(storeDir), {type: 'base'})
      return found.length > 0 ? found : undefined
    })
    expect(backups[0]).toMatchObject({type: 'base', triggeredBy: 'scheduler', timeline: 1})
    await waitFor('the job to finish', async () => (service!.baseBackups!.jobs.inFlight() ? undefined : true))
    const next = service.baseBackups!.scheduler.nextRunAt()!.getTime()
    expect(next - Date.now()).toBeGreaterThan(6.9 * 24 * 3600 * 1000)
    expect(messages).toEqual([])
  })

  it('alerts Slack when a scheduled base backup fails, naming the cause', async () => {
    service = await start({BASE_BACKUP_INTERVAL: '7d', DB_PASSWORD: 'wrong-password', BACKUP_NAME_PREFIX: 'failing'})
    await waitFor('the Slack alert', async () => (messages.length > 0 ? true : undefined))
    expect(messages[0].channel).toBe('sysadmin')
    expect(messages[0].text).toMatch(/base backup failed \(scheduler\) on .*password authentication failed/)
    expect(messages[0].text).not.toContain('wrong-password')
  })

  it('runs the check every CHECK_INTERVAL; a stalled WAL archive is told once (wal.stalled), not on every check', async () => {
    service = await start({CHECK_INTERVAL: '1s', CHECK_WAL: 'true', CHECK_LOGICAL_BACKUP: 'false', SLACK_CHANNEL: '#db-alerts', SLACK_MESSAGE_SUFFIX: '[test]'})
    await waitFor('the Slack alert', async () => (messages.length > 0 ? true : undefined), 10_000)
    expect(messages[0]).toMatchObject({channel: 'db-alerts'})
    expect(messages[0].text).toMatch(/WAL archiving stalled on .*: no archived WAL segment found/)
    expect(messages[0].text.endsWith(' [test]')).toBe(true)
    // Three more checks run and still fail: no further message before NOTIFY_REMINDER_INTERVAL (24h).
    await new Promise((resolve) => setTimeout(resolve, 3500))
    expect(messages).toHaveLength(1)
  })
})
