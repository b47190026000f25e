// A text description of ballast's schemas read from the catalogs: tables with columns, defaults, constraints,
// indexes and triggers; views with their columns; functions with their signature, volatility and a hash of their
// body. test/schema-snapshot.test.ts compares it with the committed test/schema.snapshot, so a migration that
// changes the schema without updating the snapshot (or a snapshot edited by hand) fails. Built from catalogs instead
// of pg_dump so it reads the same on every supported Postgres major version.
import type pg from 'pg';

const SCHEMAS = ['ballast', 'ballast_private'];

export async function describeSchema(client: pg.Pool | pg.Client): Promise<string> {
  const lines: string[] = [];
  const q = async (sql: string) => (await client.query(sql, [SCHEMAS])).rows as Record<string, string>[];

  for (const r of await q(`
    select n.nspname || '.' || c.relname as rel, c.relkind::text as kind,
           string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
                      || case when a.attnotnull then ' not null' else '' end
                      || case when a.attidentity <> '' then ' identity' else '' end
                      || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), ''), E'\\n    ' order by a.attnum) as cols
      from pg_class c join pg_namespace n on n.oid = c.relnamespace
      join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
      left join pg_attrdef d on d.adrelid = c.oid and d.adnum = a.attnum
     where n.nspname = any($1) and c.relkind in ('r', 'v')
     group by 1, 2 order by 1`)) {
    lines.push(`${r.kind === 'v' ? 'view' : 'table'} ${r.rel}\n    ${r.cols}`);
  }
  for (const r of await q(`
    select conrelid::regclass::text as rel, conname, pg_get_constraintdef(oid) as def
      from pg_constraint where connamespace = any(select oid from pg_namespace where nspname = any($1))
       and contype <> 'n' -- NOT NULL is listed with the columns (Postgres 18 also keeps it here)
     order by 1, 2`)) {
    lines.push(`constraint ${r.rel} ${r.conname}: ${r.def}`);
  }
  for (const r of await q(`
    select schemaname || '.' || indexname as idx, indexdef from pg_indexes where schemaname = any($1) order by 1`)) {
    lines.push(`index ${r.idx}: ${r.indexdef}`);
  }
  for (const r of await q(`
    select c.relname as rel, t.tgname, pg_get_triggerdef(t.oid) as def
      from pg_trigger t join pg_class c on c.oid = t.tgrelid join pg_namespace n on n.oid = c.relnamespace
     where n.nspname = any($1) and not t.tgisinternal order by 1, 2`)) {
    lines.push(`trigger ${r.def}`);
  }
  for (const r of await q(`
    select n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')' as sig,
           pg_get_function_result(p.oid) as result, l.lanname as lang, p.provolatile::text as vol,
           md5(p.prosrc) as body
      from pg_proc p join pg_namespace n on n.oid = p.pronamespace join pg_language l on l.oid = p.prolang
     where n.nspname = any($1) order by 1`)) {
    lines.push(`function ${r.sig} returns ${r.result} language ${r.lang} volatility ${r.vol} body ${r.body}`);
  }
  return lines.join('\n') + '\n';
}
