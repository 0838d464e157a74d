import * as fs from 'node:fs/promises'

import {Client} from 'pg'

import {runCli, startCli, tempDir} from '../helpers/cli'
import {CRASH_SEED, killPoints, phaseEvents, runWithKill} from '../helpers/crash-harness'
import {PgCluster, startPostgres} from '../helpers/postgres'
import {waitFor} from '../helpers/wal'

/**
 * `restore --globals --alter-roles` changes roles on a live server: it creates the missing ones,
 * alters the existing ones and grants memberships, statement by statement in one transaction. A
 * SIGKILL of dbb anywhere — at its phase boundaries, at seeded delays, and certainly inside the
 * transaction (held there by another session's uncommitted CREATE ROLE of the last role it
 * creates) — must leave every role exactly as it was or exactly as the globals say, never half of
 * them, and the next restore must apply them all. Real PostgreSQL on both sides.
 */
const ROLES = 300
/** Roles the target already has (altered by --alter-roles); the rest are created. */
const EXISTING = 100
const roleName = (n: number) => `r${String(n).padStart(3, '0')}`

describe('restore --globals --alter-roles under SIGKILL: the roles are all old or all new', () => {
  let source: PgCluster
  let target: PgCluster
  let dir: string
  let env: Record<string, string>
  const args = ['restore', '--globals', '--alter-roles', '--json']

  beforeAll(async () => {
    ;[source, target] = await Promise.all([startPostgres(), startPostgres()])
    dir = await tempDir('dbb-globals-crash-')
    const roles = Array.from({length: ROLES}, (_, n) => `CREATE ROLE ${roleName(n)} LOGIN PASSWORD 'source-${n}' CONNECTION LIMIT 5;`)
    const grants = Array.from({length: ROLES}, (_, n) => `GRANT team TO ${roleName(n)};`)
    await source.psql(`CREATE ROLE team NOLOGIN; ${roles.join(' ')} ${grants.join(' ')}`)
    const backup = await runCli(['backup', 'run', '--json'], {...source.dbbEnv('postgres'), BACKUP_LOCAL_DIR: dir, BACKUP_GLOBALS: 'true'})
    expect([backup.code, backup.stderr.slice(-400)]).toEqual([0, expect.any(String)])
    env = {...target.dbbEnv('postgres'), BACKUP_LOCAL_DIR: dir}
  }, 120_000)

  afterAll(async () => {
    await Promise.all([source?.destroy(), target?.destroy()])
    if (dir) await fs.rm(dir, {recursive: true, force: true})
  })

  /** The target before a restore: the first EXISTING roles with passwords and limits of its own, no team. */
  async function resetTarget(): Promise<void> {
    const drops = Array.from({length: ROLES}, (_, n) => `DROP ROLE IF EXISTS ${roleName(n)};`)
    const creates = Array.from({length: EXISTING}, (_, n) => `CREATE ROLE ${roleName(n)} LOGIN PASSWORD 'target-${n}' CONNECTION LIMIT 3;`)
    await target.psql(`${drops.join(' ')} DROP ROLE IF EXISTS team; ${creates.join(' ')}`)
  }

  /** Every role of the test with its password hash, limit and memberships: equal snapshots, equal roles. */
  const roles = () =>
    target.psql(
      `SELECT coalesce(string_agg(a.rolname || ':' || coalesce(a.rolpassword, '-') || ':' || a.rolconnlimit || ':' ||
         (SELECT coalesce(string_agg(g.rolname, '+' ORDER BY g.rolname), '') FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid WHERE m.member = a.oid),
         ',' ORDER BY a.rolname), '')
       FROM pg_authid a WHERE a.rolname ~ '^(r[0-9]{3}|team)$'`,
    )

  /** The killed client's backend ends its transaction once it sees the connection gone. */
  const noOtherBackends = () =>
    waitFor('the killed restore’s backend to end', async () =>
      (await target.psql(`SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()`)) === '0' ? true : undefined,
    )

  it('killed at every phase boundary and at seeded delays: old or new, and the next restore applies everything', async () => {
    await resetTarget()
    const before = await roles()
    const clean = await runWithKill(args, env)
    expect([clean.code, clean.stderr.slice(-400)]).toEqual([0, expect.any(String)])
    expect(JSON.parse(clean.stdout)).toMatchObject({created: expect.arrayContaining([roleName(EXISTING), roleName(ROLES - 1), 'team']), altered: expect.arrayContaining([roleName(0)])})
    const after = await roles()
    expect(after).not.toBe(before)

    const outcomes: string[] = []
    for (const point of killPoints(phaseEvents(clean), clean.durationMs, 6, CRASH_SEED)) {
      await resetTarget()
      // Password hashes are salted: the old state is taken anew after each reset.
      const old = await roles()
      const run = await runWithKill(args, env, point)
      await noOtherBackends()
      const now = await roles()
      expect([point.label, now === old || now === after]).toEqual([point.label, true])
      outcomes.push(`${point.label}: ${run.killed ? 'killed' : 'finished'}, ${now === old ? 'old' : 'new'}`)

      const next = await runCli(args, env)
      expect([point.label, next.code, next.code === 0 ? '' : next.stderr]).toEqual([point.label, 0, ''])
      expect(await roles()).toBe(after)
    }

    expect(outcomes.length).toBeGreaterThan(6)
  }, 600_000)

  it('killed inside the transaction (waiting on another session’s CREATE ROLE of the last role): every role is as it was', async () => {
    await resetTarget()
    const before = await roles()
    const blocker = new Client({host: target.host, port: target.port, user: target.user, password: target.password, database: 'postgres'})
    await blocker.connect()
    try {
      await blocker.query('BEGIN')
      await blocker.query(`CREATE ROLE ${roleName(ROLES - 1)}`)
      const child = startCli(args, env)
      const exited = new Promise((resolve) => child.once('close', resolve))
      // dbb's backend has altered and created everything before it in this transaction, and waits.
      await waitFor('the restore to wait on the blocker', async () =>
        (await target.psql(`SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND backend_type = 'client backend'`)) === '1' ? true : undefined,
      )
      child.kill('SIGKILL')
      await exited
      await blocker.query('ROLLBACK')
    } finally {
      await blocker.end()
    }

    await noOtherBackends()
    expect(await roles()).toBe(before)
    const next = await runCli(args, env)
    expect([next.code, next.code === 0 ? '' : next.stderr]).toEqual([0, ''])
    expect(await roles()).not.toBe(before)
  }, 120_000)
})
