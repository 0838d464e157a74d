import {pgDumpArgs} from '../../src/backup/run-backup'
import {loadConfig} from '../../src/config'
import {describeCarryOver, effectiveAcl, settingClause, splitSettingList} from '../../src/restore/fidelity'
import {writesRestrict} from '../../src/restore/preflight'

describe('settings re-applied with ALTER DATABASE/ROLE … SET', () => {
  it('splits list settings like PostgreSQL (quoted elements, doubled quotes, spaces)', () => {
    expect(splitSettingList('app, "$user", public')).toEqual(['app', '$user', 'public'])
    expect(splitSettingList('"we""ird, name",x')).toEqual(['we"ird, name', 'x'])
    expect(splitSettingList('')).toEqual([])
    expect(() => splitSettingList('"open')).toThrow(/unterminated/)
  })

  it('quotes list settings element by element and others as one literal', () => {
    expect(settingClause('search_path=app, "$user", public')).toBe(`search_path = 'app', '$user', 'public'`)
    expect(settingClause("statement_timeout=5min")).toBe(`statement_timeout = '5min'`)
    expect(settingClause("app.tenant=o'hara")).toBe(`app.tenant = 'o''hara'`)
    expect(settingClause('search_path=')).toBe(`search_path = ''`)
    expect(() => settingClause('novalue')).toThrow(/name=value/)
  })
})

describe('describeCarryOver', () => {
  const profile = {
    owner: 'app_owner',
    acl: [
      {grantee: 'app_owner', privilege: 'CONNECT' as const, grantable: false},
      {grantee: '', privilege: 'TEMPORARY' as const, grantable: false},
      {grantee: 'reporting', privilege: 'CONNECT' as const, grantable: true},
    ],
    comment: null,
    settings: ['search_path=app'],
    roleSettings: [{role: 'reporting', settings: ['work_mem=64MB']}],
    connectionLimit: -1,
    encoding: 'UTF8',
    collate: 'C',
    ctype: 'C',
  }

  it('says what carries over and from where, and what cannot (missing role, encoding)', () => {
    const plan = describeCarryOver(profile, 'old-target', new Set(['app_owner']))
    expect(plan.from).toBe('the current database')
    expect(plan.willCarryOver).toEqual([
      'owner app_owner',
      'CONNECT revoked from PUBLIC',
      'search_path=app',
    ])
    expect(plan.willNotCarryOver).toEqual([
      'GRANT CONNECT* to reporting (role reporting does not exist on this server)',
      'work_mem=64MB for role reporting (role reporting does not exist on this server)',
      "encoding/locale UTF8, C/C: the new database gets the server's, set when it is created",
    ])
  })

  it('reads a NULL ACL as the default one (PUBLIC may connect)', () => {
    expect(describeCarryOver({...profile, acl: null}, 'backup').willCarryOver).toContain('default privileges (PUBLIC may connect)')
    expect(effectiveAcl({...profile, acl: null}).filter((entry) => entry.grantee === '').map((entry) => entry.privilege).sort()).toEqual(['CONNECT', 'TEMPORARY'])
  })
})

describe('dump options and versions', () => {
  it('dumps with owners and privileges unless BACKUP_NO_OWNER=true', () => {
    expect(pgDumpArgs(false)).toEqual(['--format=plain'])
    expect(pgDumpArgs(true)).toEqual(['--no-owner', '--no-privileges', '--format=plain'])
    expect(loadConfig(['logicalDump'], {}).logicalDump).toEqual({noOwner: false, recordChecksums: false, format: 'plain'})
    expect(loadConfig(['logicalDump'], {BACKUP_NO_OWNER: 'true'}).logicalDump).toEqual({noOwner: true, recordChecksums: false, format: 'plain'})
    expect(loadConfig(['logicalDump'], {BACKUP_RECORD_CHECKSUMS: 'true'}).logicalDump).toEqual({noOwner: false, recordChecksums: true, format: 'plain'})
  })

  it('knows which pg_dump/psql releases write and read \\restrict', () => {
    expect(['15.14', '15.18', '16.10', '17.6', '18.0', '13.22'].map((version) => writesRestrict(version))).toEqual([true, true, true, true, true, true])
    expect(['15.13', '16.9', '17.5', '12.22', 'garbage'].map((version) => writesRestrict(version))).toEqual([false, false, false, false, false])
  })
})
