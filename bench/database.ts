import {execFile} from 'node:child_process'
import {promisify} from 'node:util'

import type {PgCluster} from '../test/helpers/postgres'

const run = promisify(execFile)

export interface BenchDatabase {
  name: string
  /** pg_database_size, bytes. */
  sizeBytes: number
  /** Bytes of `pg_dump --no-owner --no-privileges` (plain SQL). */
  dumpBytes: number
}

/** libpq variables for the PostgreSQL client programs the shell pipelines run. */
export function libpqEnv(cluster: PgCluster, database: string): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    LANG: 'C.UTF-8',
    PGHOST: cluster.host,
    PGPORT: String(cluster.port),
    PGUSER: cluster.user,
    PGPASSWORD: cluster.password,
    PGDATABASE: database,
  }
}

/**
 * The benchmark database: `pgbench -i -s <scale>` (narrow rows that compress very well) plus
 * about `wideMb` MB of SQL of wide rows — text made of hex digests and words, and jsonb — which
 * compresses much more slowly and is closer to what applications store.
 */
export async function createBenchDatabase(cluster: PgCluster, name: string, scale: number, wideMb: number): Promise<BenchDatabase> {
  await cluster.psql(`DROP DATABASE IF EXISTS "${name}"`)
  await cluster.psql(`CREATE DATABASE "${name}"`)
  await run('pgbench', ['-i', '-q', '-s', String(scale), name], {env: libpqEnv(cluster, name), maxBuffer: 16 * 1024 * 1024})
  await cluster.psql(
    `CREATE TABLE documents (id bigint PRIMARY KEY, title text NOT NULL, body text NOT NULL, attributes jsonb NOT NULL)`,
    name,
  )
  // ~700 bytes of SQL per row; inserted in batches so a large size does not need one huge transaction.
  const rows = Math.round(wideMb * 1500)
  for (let first = 1; first <= rows; first += 200_000) {
    const last = Math.min(rows, first + 199_999)
    await cluster.psql(
      `INSERT INTO documents
       SELECT g,
         'Document ' || g || ' about ' || (ARRAY['billing','shipping','returns','accounts','reports'])[1 + g % 5],
         (SELECT string_agg(md5((g * 31 + i)::text) || ' ' || (ARRAY['lorem','ipsum','dolor','sit','amet','consectetur'])[1 + (g + i) % 6], ' ')
            FROM generate_series(1, 12) i),
         jsonb_build_object('customer', 'cust_' || (g % 9973), 'amount', round((g % 100000) / 7.0, 2),
           'tags', jsonb_build_array(md5(g::text), 'tier' || g % 4), 'created', '2026-01-01'::timestamptz + g * interval '37 seconds')
       FROM generate_series(${first}, ${last}) g`,
      name,
    )
  }

  await cluster.psql('VACUUM ANALYZE', name)
  const sizeBytes = Number(await cluster.psql(`SELECT pg_database_size('${name}')`))
  const {stdout} = await run('bash', ['-o', 'pipefail', '-c', 'pg_dump --no-owner --no-privileges | wc -c'], {env: libpqEnv(cluster, name)})
  return {name, sizeBytes, dumpBytes: Number(stdout.trim())}
}
