import {planGlobals, splitStatements} from '../../src/restore/globals'

// As pg_dumpall 15 --globals-only writes it (a password hash, a quoted name with a quote inside, a tablespace).
const DUMP = `--
-- PostgreSQL database cluster dump
--

\\restrict AbC123

SET default_transaction_read_only = off;

SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;

--
-- Roles
--

CREATE ROLE alice;
ALTER ROLE alice WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS PASSWORD 'SCRAM-SHA-256$4096:c2FsdA==$a;b:c';
CREATE ROLE "Weird ""Role""; x";
ALTER ROLE "Weird ""Role""; x" WITH NOLOGIN;
COMMENT ON ROLE "Weird ""Role""; x" IS 'multi
line; comment';
CREATE ROLE postgres;
ALTER ROLE postgres WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS PASSWORD 'SCRAM-SHA-256$4096:eA==$x:y';
CREATE ROLE readers;
ALTER ROLE readers WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS;

--
-- User Configurations
--

ALTER ROLE alice SET search_path TO 'app', 'public';
ALTER ROLE alice IN DATABASE app SET work_mem TO '64MB';

--
-- Tablespaces
--

CREATE TABLESPACE fast OWNER postgres LOCATION '/mnt/fast';

--
-- Role memberships
--

GRANT readers TO alice GRANTED BY postgres;
GRANT readers TO "Weird ""Role""; x" WITH ADMIN OPTION GRANTED BY postgres;
GRANT readers TO postgres GRANTED BY postgres;

\\unrestrict AbC123

--
-- PostgreSQL database cluster dump complete
--
`

describe('restore --globals: which statements of a globals dump run', () => {
  it('splits statements at ; outside literals and quoted names, without comments and \\ meta-commands', () => {
    const statements = splitStatements(DUMP)
    expect(statements[0]).toBe('SET default_transaction_read_only = off')
    expect(statements).toContain(`COMMENT ON ROLE "Weird ""Role""; x" IS 'multi\nline; comment'`)
    expect(statements.find((statement) => statement.startsWith('ALTER ROLE alice WITH'))).toContain(`PASSWORD 'SCRAM-SHA-256$4096:c2FsdA==$a;b:c'`)
    expect(statements.some((statement) => statement.includes('restrict') || statement.startsWith('--'))).toBe(false)
  })

  it('on a fresh server: creates every missing role with its attributes, settings, comments and memberships; tablespaces are reported', () => {
    const plan = planGlobals(splitStatements(DUMP), new Set(['postgres']), new Set(['postgres']))
    expect(plan.created).toEqual(['alice', 'Weird "Role"; x', 'readers'])
    expect(plan.existing).toEqual(['postgres'])
    expect(plan.granted).toEqual(['readers → alice', 'readers → Weird "Role"; x'])
    const sql = plan.apply.map((step) => step.sql)
    expect(sql).toContain(`GRANT readers TO "Weird ""Role""; x" WITH ADMIN OPTION`)
    expect(sql).toContain('GRANT readers TO alice')
    expect(sql.some((statement) => statement.includes('GRANTED BY'))).toBe(false)
    // The existing superuser is never touched: not its password, not its attributes, not a new membership.
    expect(sql.some((statement) => /ROLE postgres|TO postgres/.test(statement))).toBe(false)
    expect(plan.skipped.some((line) => line.includes('membership of existing role postgres'))).toBe(true)
    expect(plan.skipped.some((line) => line.includes('tablespace'))).toBe(true)
    // The database-specific setting waits for its database.
    expect(plan.skipped.some((line) => line.includes('in database app'))).toBe(true)
    // Labels name roles, never the statement (which may hold a password).
    expect(plan.apply.every((step) => !step.label.includes('SCRAM'))).toBe(true)
    expect(plan.skipped.every((line) => !line.includes('SCRAM'))).toBe(true)
  })

  it('with alice existing: no ALTER, SET, COMMENT or membership for her; the others still created', () => {
    const plan = planGlobals(splitStatements(DUMP), new Set(['postgres', 'alice']), new Set(['postgres', 'app']))
    expect(plan.created).toEqual(['Weird "Role"; x', 'readers'])
    expect(plan.existing).toEqual(['alice', 'postgres'])
    const sql = plan.apply.map((step) => step.sql)
    expect(sql.some((statement) => /\balice\b/.test(statement))).toBe(false)
    expect(plan.granted).toEqual(['readers → Weird "Role"; x'])
  })

  it('--alter-roles: existing alice takes her attributes, settings and membership; the restoring role (postgres) is never altered; nothing revoked', () => {
    const plan = planGlobals(splitStatements(DUMP), new Set(['postgres', 'alice', 'readers']), new Set(['postgres', 'app']), {alterExisting: true, currentRole: 'postgres'})
    expect(plan.created).toEqual(['Weird "Role"; x'])
    expect(plan.altered).toEqual(['alice', 'readers'])
    const sql = plan.apply.map((step) => step.sql)
    expect(sql.filter((statement) => statement.startsWith('ALTER ROLE alice'))).toHaveLength(3)
    expect(sql).toContain('GRANT readers TO alice')
    expect(sql.some((statement) => /\bpostgres\b/.test(statement) && !statement.startsWith('CREATE TABLESPACE'))).toBe(false)
    expect(plan.skipped).toContain('role postgres: it runs this restore, so --alter-roles leaves it unchanged')
    expect(sql.some((statement) => /^(REVOKE|DROP)/.test(statement))).toBe(false)
  })

  it('unknown statements, and role statements with anything more in them, are reported, never executed', () => {
    const crafted = [
      'DROP ROLE alice',
      'CREATE ROLE bob',
      'ALTER ROLE bob WITH LOGIN; DROP TABLE x',
      "ALTER ROLE bob WITH PASSWORD 'x'; DROP TABLE x; --'",
      "COMMENT ON ROLE bob IS 'a' || (SELECT 1)",
      "ALTER ROLE bob SET search_path TO 'a'; DROP TABLE x",
      'GRANT readers TO bob; DROP TABLE x',
      "SET client_encoding = 'UTF8'; DROP TABLE x",
      "ALTER ROLE bob WITH LOGIN PASSWORD 'it''s'",
    ]
    const plan = planGlobals(crafted, new Set(['readers']), new Set())
    expect(plan.apply.map((step) => step.sql)).toEqual(['CREATE ROLE bob', "ALTER ROLE bob WITH LOGIN PASSWORD 'it''s'"])
    expect(plan.skipped).toHaveLength(crafted.length - 2)
  })
})
