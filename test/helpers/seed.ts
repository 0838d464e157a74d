import type {PgCluster} from './postgres'

/** Data of several types, a sequence, a view, and a table of `bigRows` rows. */
export async function seedDatabase(cluster: PgCluster, database: string, bigRows = 100_000): Promise<void> {
  await cluster.psql(`CREATE DATABASE "${database}"`)
  await cluster.psql(
    `
    CREATE SEQUENCE invoice_number START 1000;
    CREATE TABLE customers (
      id serial PRIMARY KEY,
      name text NOT NULL,
      profile jsonb,
      avatar bytea,
      balance numeric(14, 4),
      created timestamptz NOT NULL DEFAULT '2026-01-01T00:00:00Z'
    );
    INSERT INTO customers (name, profile, avatar, balance) VALUES
      ('Zoë O''Brien', '{"tags": ["vip", "été"], "nested": {"a": 1}}', '\\x00ff10deadbeef', 12345.6789),
      (E'tab\\tand\\nnewline', '[]', '', -0.0001),
      ('null fields', NULL, NULL, NULL);
    SELECT nextval('invoice_number') FROM generate_series(1, 5);
    CREATE TABLE events (id bigint PRIMARY KEY, payload text, amount numeric, at timestamptz);
    INSERT INTO events
      SELECT g, md5(g::text) || repeat('x', g % 50), g * 1.5, '2026-01-01T00:00:00Z'::timestamptz + g * interval '1 second'
      FROM generate_series(1, ${bigRows}) g;
    CREATE VIEW rich_customers AS SELECT id, name FROM customers WHERE balance > 100;
    `,
    database,
  )
}

/** A fingerprint of everything seedDatabase creates: equal fingerprints, equal contents. */
export async function fingerprint(cluster: PgCluster, database: string): Promise<Record<string, string>> {
  const queries: Record<string, string> = {
    customers: `SELECT md5(string_agg(c::text, '|' ORDER BY id)) FROM customers c`,
    events: `SELECT count(*) || ':' || md5(string_agg(e::text, '|' ORDER BY id)) FROM events e`,
    sequence: `SELECT last_value || ':' || is_called FROM invoice_number`,
    view: `SELECT string_agg(name, ',' ORDER BY id) FROM rich_customers`,
    serial: `SELECT nextval('customers_id_seq')`,
  }
  const result: Record<string, string> = {}
  for (const [name, sql] of Object.entries(queries)) result[name] = await cluster.psql(sql, database)
  return result
}
