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
  /** What the wide rows are made of. */
  wideKind?: WideKind
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
 * What the wide part of the benchmark database is made of:
 *  - `realistic` (default): what applications store — natural-language-like text and JSON documents,
 *    see `realisticRows`;
 *  - `random`: the old worst case, hex digests and jsonb of digests that no codec compresses much
 *    (kept to show that end of the range; BENCHMARKS.md reports both).
 */
export type WideKind = 'realistic' | 'random'
export const WIDE_KINDS: readonly WideKind[] = ['realistic', 'random']

/** Bytes of plain SQL per wide row, measured (pg_dump of the documents table): sizes the row count. */
const SQL_BYTES_PER_ROW: Record<WideKind, number> = {realistic: 1030, random: 700}

/**
 * The vocabulary of the realistic text: the ~300 most common English words first (the ranks a Zipf
 * distribution draws most often), then 8,000 invented words of 2–3 syllables with suffixes (the long
 * tail: names, jargon, typos). Deterministic: the same words in the same order on every run.
 */
const WORDS_SQL = `
CREATE TABLE bench_words AS
WITH common(word, rank) AS (
  SELECT w, ord::int FROM unnest(string_to_array('the of and to a in is it that for you was with on as have be at by this are from or had not but what all were when we there can an your which their said if do will each about how up out them then she many some so these would other into has more her two like him see time could no make than first been its who now people my made over did down only way find use may water long little very after words called just where most know get through back much before go good new write our used me man too any day same right look think also around another came come work three word must because does part even place well such here take why things help put years different away again off went old number great tell men say small every found still between name should home big give air line set own under read last never us left end along while might next sound below saw something thought both few those always looked show large often together asked house world going want school important until form food keep children feet land side without boy once animals life enough took sometimes four head above kind began almost live page got earth need far hand high year mother light parts country father let night following picture being study second eyes soon times story boys since white days ever paper hard near sentence better best across during today others however sure means knew try told young miles sun ways thing whole hear example heard several change answer room sea against top turned learn point city play toward five using himself usually', ' ')) WITH ORDINALITY AS t(w, ord)
),
syllables(s) AS (SELECT string_to_array('ba,ce,di,fo,gu,ha,je,ki,lo,mu,na,pe,ri,so,tu,va,we,xi,yo,zu,bra,cle,dri,fla,gro,pli,sta,tre,qua,shi,tha,ver,mon,lan,tor,pen,sil,dor,kin,mar', ',') AS s)
SELECT rank, word FROM common
UNION ALL
SELECT (SELECT count(*) FROM common)::int + 1 + n,
  s[1 + n % 40] || s[1 + (n / 40) % 40] || CASE WHEN n >= 1600 THEN s[1 + (n / 1600) % 40] ELSE '' END
    || CASE WHEN n % 7 = 0 THEN 'tion' WHEN n % 5 = 0 THEN 'ing' WHEN n % 3 = 0 THEN 's' ELSE '' END
FROM syllables, generate_series(0, 7999) n;
`

/**
 * A key's Zipf-distributed word rank (P(rank r) ~ 1/r over the vocabulary) and a key's uniform pick
 * in [0, modulus): both from PostgreSQL's 64-bit hash of the key, so the data is the same on every run.
 */
function drawFunctions(words: number): string {
  return `CREATE FUNCTION bench_zipf(key bigint) RETURNS int LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT floor(exp(((hashint8extended(key, 15) & 9007199254740991) / 9007199254740992.0) * ln(${words + 1})))::int $$;
CREATE FUNCTION bench_pick(key bigint, modulus int) RETURNS int LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT ((hashint8extended(key, 16) & 9007199254740991) % modulus)::int $$`
}

/**
 * The realistic wide rows, `first`..`last`: an order-like record as a web application keeps it.
 *  - title: "Order <id>: " and 3–6 words;
 *  - body: 2–8 sentences drawn from a pool of as many sentences as there are rows (so a sentence
 *    recurs a few times across the table, as templated text does), each sentence 6–20 Zipf-drawn
 *    words with capitals and punctuation;
 *  - attributes (jsonb): the same keys in every document (customer {id, name, email, country},
 *    status, amount, currency, created_at/updated_at timestamps, 1–4 items {sku, name, qty,
 *    unit_price} from a 20,000-product catalogue whose names repeat with the SKU, tags), plus a UUID
 *    (session_id) and a base64 sha256 (signature), which are as incompressible as in real data.
 */
function realisticRows(first: number, last: number, sentences: number): string {
  return `INSERT INTO documents
WITH v AS MATERIALIZED (SELECT array_agg(word ORDER BY rank) AS w FROM bench_words)
SELECT g,
  'Order ' || g || ': ' || (SELECT string_agg(v.w[bench_zipf(g * 1024 + 1000 + i)], ' ') FROM generate_series(1, 3 + bench_pick(g, 4)) i),
  (SELECT string_agg(s.text, ' ') FROM generate_series(1, 2 + bench_pick(g * 3, 7)) i JOIN bench_sentences s ON s.id = bench_pick(g * 16 + i, ${sentences})),
  jsonb_build_object(
    'customer', jsonb_build_object('id', 'cus_' || bench_pick(g * 5, 40000),
       'name', initcap(v.w[bench_zipf(g * 1024 + 900)]) || ' ' || initcap(v.w[bench_zipf(g * 1024 + 901)]),
       'email', v.w[bench_zipf(g * 1024 + 902)] || '.' || v.w[bench_zipf(g * 1024 + 903)] || '@example.' || (ARRAY['com','org','net','io'])[1 + bench_pick(g * 7, 4)],
       'country', (ARRAY['DE','FR','US','GB','NL','SE','ES','IT','PL','JP'])[1 + bench_pick(g * 11, 10)]),
    'status', (ARRAY['paid','pending','shipped','refunded','cancelled'])[1 + bench_pick(g * 13, 5)],
    'amount', round((bench_pick(g * 17, 5000000) / 100.0)::numeric, 2),
    'currency', (ARRAY['EUR','USD','GBP'])[1 + bench_pick(g * 19, 3)],
    'created_at', '2025-01-01T00:00:00Z'::timestamptz + g * interval '41 seconds',
    'updated_at', '2025-01-01T00:00:00Z'::timestamptz + g * interval '41 seconds' + bench_pick(g * 23, 86400 * 30) * interval '1 second',
    'items', (SELECT jsonb_agg(jsonb_build_object('sku', 'SKU-' || lpad(p::text, 6, '0'),
                'name', initcap(v.w[bench_zipf(p * 4 + 1)]) || ' ' || v.w[bench_zipf(p * 4 + 2)] || ' ' || v.w[bench_zipf(p * 4 + 3)],
                'qty', 1 + bench_pick(g * 64 + j + 32, 5), 'unit_price', round((bench_pick(p, 20000) / 100.0)::numeric, 2)))
              FROM generate_series(1, 1 + bench_pick(g * 29, 4)) j, LATERAL (SELECT bench_pick(g * 64 + j, 20000) AS p) product),
    'tags', (SELECT jsonb_agg(v.w[bench_zipf(g * 1024 + 950 + j)]) FROM generate_series(1, 1 + bench_pick(g * 31, 3)) j),
    'session_id', md5('session' || g)::uuid,
    'signature', encode(sha256(int8send(g)), 'base64'))
FROM v, generate_series(${first}, ${last}) g`
}

function sentencePool(count: number): string {
  return `CREATE TABLE bench_sentences AS
WITH v AS MATERIALIZED (SELECT array_agg(word ORDER BY rank) AS w FROM bench_words)
SELECT n AS id, (SELECT string_agg(CASE WHEN i = 1 THEN initcap(v.w[bench_zipf(n * 32 + i)]) ELSE v.w[bench_zipf(n * 32 + i)] END
    || CASE WHEN i = 6 + n % 15 THEN '.' WHEN i % 7 = 0 THEN ',' ELSE '' END, ' ') FROM generate_series(1, 6 + n % 15) i) AS text
FROM v, generate_series(0, ${count - 1}) n;
CREATE UNIQUE INDEX ON bench_sentences (id)`
}

/** The old wide rows: text of hex digests and a few words, jsonb of digests (compresses poorly). */
function randomRows(first: number, last: number): string {
  return `INSERT INTO documents
SELECT g,
  'Document ' || g || ' about ' || (ARRAY['billing','shipping','returns','accounts','reports'])[1 + g % 5],
  (SELECT string_agg(md5((g * 31 + i)::text) || ' ' || (ARRAY['lorem','ipsum','dolor','sit','amet','consectetur'])[1 + (g + i) % 6], ' ')
     FROM generate_series(1, 12) i),
  jsonb_build_object('customer', 'cust_' || (g % 9973), 'amount', round((g % 100000) / 7.0, 2),
    'tags', jsonb_build_array(md5(g::text), 'tier' || g % 4), 'created', '2026-01-01'::timestamptz + g * interval '37 seconds')
FROM generate_series(${first}, ${last}) g`
}

/**
 * The benchmark database: `pgbench -i -s <scale>` (narrow rows that compress very well) plus about
 * `wideMb` MB of SQL of wide rows (a `documents` table of text and jsonb) of the given kind.
 */
export async function createBenchDatabase(cluster: PgCluster, name: string, scale: number, wideMb: number, wideKind: WideKind = 'realistic'): Promise<BenchDatabase> {
  await cluster.psql(`DROP DATABASE IF EXISTS "${name}"`)
  await cluster.psql(`CREATE DATABASE "${name}"`)
  await run('pgbench', ['-i', '-q', '-s', String(scale), name], {env: libpqEnv(cluster, name), maxBuffer: 16 * 1024 * 1024})
  await cluster.psql(`CREATE TABLE documents (id bigint PRIMARY KEY, title text NOT NULL, body text NOT NULL, attributes jsonb NOT NULL)`, name)
  const rows = Math.round((wideMb * 1e6) / SQL_BYTES_PER_ROW[wideKind])
  if (wideKind === 'realistic') {
    await cluster.psql(WORDS_SQL, name)
    await cluster.psql(drawFunctions(Number(await cluster.psql('SELECT count(*) FROM bench_words', name))), name)
    await cluster.psql(sentencePool(Math.max(1000, rows)), name)
  }

  // Inserted in batches so a large size does not need one huge transaction.
  for (let first = 1; first <= rows; first += 100_000) {
    const last = Math.min(rows, first + 99_999)
    await cluster.psql(wideKind === 'realistic' ? realisticRows(first, last, Math.max(1000, rows)) : randomRows(first, last), name)
  }

  // The helpers are the generator's, not the data's: the dump holds pgbench's tables and documents.
  if (wideKind === 'realistic') await cluster.psql('DROP TABLE bench_words, bench_sentences; DROP FUNCTION bench_zipf, bench_pick', name)
  await cluster.psql('VACUUM ANALYZE', name)
  const sizeBytes = Number(await cluster.psql(`SELECT pg_database_size('${name}')`))
  const {stdout} = await run('bash', ['-o', 'pipefail', '-c', 'pg_dump --no-owner --no-privileges | wc -c'], {env: libpqEnv(cluster, name)})
  return {name, sizeBytes, dumpBytes: Number(stdout.trim()), wideKind}
}
