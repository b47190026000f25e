-- Up Migration
--
-- Baseline, file 3 of 11: JSON Schema validation inside Postgres.
--
-- Every pipeline stores its input contract as JSON Schema (draft 2020-12, as produced by zod 4's
-- `z.toJSONSchema(schema, { io: 'input' })`), and a model step may store an output contract. Submission validates the
-- input here, in the submitting transaction, so a job with a bad input never exists, whatever the client (psql,
-- GraphQL, another system's SQL). ballast.json_schema_errors(schema, value) returns every violation as (path,
-- message), in a deterministic walk order, at most 100 of them plus a marker row when it stopped early; the
-- ballast._json_schema_* helpers are its parts, pure (immutable) and bounded: every walk takes a budget of rows, and
-- regular expressions are translated from JavaScript syntax once per call.
-- Folded from the old 0002 and 0027 (the bounds).

-- ballast._json_schema_path_key
-- Takes a parent path and an object key; returns the child path: `key` at the root, `parent.key` for
-- identifier-like keys, `parent["any key"]` otherwise. A key longer than 60 characters is shown cut, as
-- `parent["first 57 characters..."]`, so a path stays short whatever the value's keys. Raises nothing.
create function ballast._json_schema_path_key(p_path text, p_key text) returns text
language sql immutable parallel safe
as $fn$
  select case
    when char_length(p_key) > 60 then p_path || '[' || to_jsonb(left(p_key, 57) || '...')::text || ']'
    when p_key ~ '^[A-Za-z_$][A-Za-z0-9_$]*$' then
      case when p_path = '' then p_key else p_path || '.' || p_key end
    else p_path || '[' || to_jsonb(p_key)::text || ']'
  end
$fn$;
grant execute on function ballast._json_schema_path_key(text,text) to ballast_client, ballast_operator, ballast_reporter;

-- ballast._json_schema_show
-- Takes any JSON value; returns its JSON text for use in error messages,
-- shortened to about 60 characters. Raises nothing.
create function ballast._json_schema_show(p_value jsonb) returns text
language sql immutable parallel safe
as $fn$
  select case
    when char_length(p_value::text) > 60 then left(p_value::text, 57) || '...'
    else p_value::text
  end
$fn$;
grant execute on function ballast._json_schema_show(jsonb) to ballast_client, ballast_operator, ballast_reporter;

-- ballast._json_schema_type_list
-- Takes a list of JSON Schema type names; returns them as English, e.g.
-- `string`, `string or null`, `string, number or null` (duplicates removed,
-- `integer` dropped when `number` is also allowed). Raises nothing.
create function ballast._json_schema_type_list(p_types text[]) returns text
language plpgsql immutable parallel safe
as $fn$
declare
  v_list text[] := '{}';
  v_type text;
  v_count integer;
begin
  foreach v_type in array coalesce(p_types, '{}') loop
    if v_type = any(v_list) then
      continue;
    end if;
    if v_type = 'integer' and 'number' = any(p_types) then
      continue;
    end if;
    v_list := v_list || v_type;
  end loop;
  v_count := coalesce(array_length(v_list, 1), 0);
  if v_count = 0 then
    return 'nothing';
  elsif v_count = 1 then
    return v_list[1];
  end if;
  return array_to_string(v_list[1:v_count - 1], ', ') || ' or ' || v_list[v_count];
end
$fn$;
grant execute on function ballast._json_schema_type_list(text[]) to ballast_client, ballast_operator, ballast_reporter;

-- ballast._json_schema_js_regex
-- Takes an ECMAScript regex source (JSON Schema `pattern`); returns the equivalent Postgres ARE where the two
-- dialects differ: `\b`/`\B` become `\y`/`\Y`, `\d` and `\w` become their ASCII classes, `\xHH` becomes `\u00HH`,
-- `.` stops matching line terminators, and the escapes that are anchors only in Postgres (`\A`, `\Z`, `\m`, `\M`,
-- `\y`, `\Y`) become the plain letter, as ECMAScript reads them. A pattern without `\` or `.` is returned as is;
-- others are cut into tokens by one regexp_matches (runs of plain characters stay whole), not character by character.
-- Anything Postgres cannot express (e.g. `\p{...}`, named groups) is left as is, so compiling it fails and the
-- caller skips the check. Raises nothing.
create function ballast._json_schema_js_regex(p_pattern text) returns text
language plpgsql immutable parallel safe
as $fn$
declare
  v_out text[] := '{}';
  v_tok text;
  v_in_class boolean := false;
begin
  if strpos(p_pattern, '\') = 0 and strpos(p_pattern, '.') = 0 then
    return p_pattern;
  end if;
  -- tokens: a run of characters that never need translation, an \xHH escape, any other escape, one character
  for v_tok in
    select v_m[1] from regexp_matches(p_pattern, '[^][\\.]+|\\x[0-9A-Fa-f]{2}|\\.|.', 'g') as t(v_m)
  loop
    if left(v_tok, 1) = '\' and char_length(v_tok) > 1 then
      v_tok := case
        when char_length(v_tok) = 4 then '\u00' || substr(v_tok, 3)  -- only \xHH tokens are that long
        when v_tok = '\d' then case when v_in_class then '0-9' else '[0-9]' end
        when v_tok = '\w' then case when v_in_class then 'A-Za-z0-9_' else '[A-Za-z0-9_]' end
        when v_in_class then case when v_tok in ('\A', '\Z', '\m', '\M', '\y', '\Y') then substr(v_tok, 2) else v_tok end
        when v_tok = '\D' then '[^0-9]'
        when v_tok = '\W' then '[^A-Za-z0-9_]'
        when v_tok = '\b' then '\y'
        when v_tok = '\B' then '\Y'
        when v_tok in ('\A', '\Z', '\m', '\M', '\y', '\Y') then substr(v_tok, 2)
        else v_tok
      end;
    elsif v_in_class then
      if v_tok = ']' then
        v_in_class := false;
      end if;
    elsif v_tok = '[' then
      v_in_class := true;
    elsif v_tok = '.' then
      v_tok := '[^\n\r\u2028\u2029]';
    end if;
    v_out := v_out || v_tok;
  end loop;
  return array_to_string(v_out, '');
end
$fn$;
grant execute on function ballast._json_schema_js_regex(text) to ballast_client, ballast_operator, ballast_reporter;

-- ballast._json_schema_matches
-- Takes a string and a JSON Schema `pattern` (ECMAScript syntax); returns
-- true when the string matches (unanchored search, as JSON Schema specifies),
-- false when it does not, and null when the pattern cannot be compiled by
-- Postgres. Raises nothing for bad patterns.
create function ballast._json_schema_matches(p_string text, p_pattern text) returns boolean
language plpgsql immutable parallel safe
as $fn$
begin
  return p_string ~ ballast._json_schema_js_regex(p_pattern);
exception
  when invalid_regular_expression or program_limit_exceeded then
    return null;
end
$fn$;
grant execute on function ballast._json_schema_matches(text,text) to ballast_client, ballast_operator, ballast_reporter;

-- ballast._json_schema_resolve
-- Takes the root schema and a `$ref` value; returns the referenced subschema
-- for `#` and JSON pointers such as `#/$defs/Node` or `#/definitions/Node`,
-- or null when the reference is external or points nowhere. Raises nothing.
create function ballast._json_schema_resolve(p_root jsonb, p_ref text) returns jsonb
language sql immutable parallel safe
as $fn$
  select case
    when p_ref in ('#', '') then p_root
    when p_ref like '#/%' then
      p_root #> array(
        select replace(replace(replace(v_part, '%25', '%'), '~1', '/'), '~0', '~')
        from unnest(string_to_array(substr(p_ref, 3), '/')) with ordinality as t(v_part, v_ord)
        order by v_ord
      )
    else null
  end
$fn$;
grant execute on function ballast._json_schema_resolve(jsonb,text) to ballast_client, ballast_operator, ballast_reporter;

-- ballast._json_schema_deref
-- Takes the root schema and a schema; follows `$ref` (up to 32 hops) and
-- returns the first schema that is not a pure reference, or null when a
-- reference cannot be resolved. Raises nothing.
create function ballast._json_schema_deref(p_root jsonb, p_schema jsonb) returns jsonb
language plpgsql immutable parallel safe
as $fn$
declare
  v_schema jsonb := p_schema;
  v_hops integer := 0;
begin
  while jsonb_typeof(v_schema) = 'object' and v_schema ? '$ref' and v_hops < 32 loop
    v_schema := ballast._json_schema_resolve(p_root, v_schema->>'$ref');
    v_hops := v_hops + 1;
  end loop;
  return v_schema;
end
$fn$;
grant execute on function ballast._json_schema_deref(jsonb,jsonb) to ballast_client, ballast_operator, ballast_reporter;

-- ballast._json_schema_declared_types
-- Takes the root schema and a schema; returns the JSON types the schema can
-- accept at its top level (from `type`, `const`, `enum`, `$ref` and the
-- branches of `anyOf`/`oneOf`), or null when it does not restrict the type.
-- Used to explain union failures. Raises nothing.
create function ballast._json_schema_declared_types(
  p_root jsonb,
  p_schema jsonb,
  p_depth integer default 0
) returns text[]
language plpgsql immutable parallel safe
as $fn$
declare
  v_types text[] := '{}';
  v_branch jsonb;
  v_branch_types text[];
begin
  if p_depth > 32 then
    return null;
  end if;
  if jsonb_typeof(p_schema) = 'boolean' then
    return case when p_schema = 'false'::jsonb then '{}'::text[] else null end;
  end if;
  if jsonb_typeof(p_schema) is distinct from 'object' then
    return null;
  end if;
  if p_schema ? 'type' then
    if jsonb_typeof(p_schema->'type') = 'array' then
      v_types := array(select jsonb_array_elements_text(p_schema->'type'));
    else
      v_types := array[p_schema->>'type'];
    end if;
    if p_schema->'nullable' = 'true'::jsonb then
      v_types := v_types || 'null'::text;
    end if;
    return v_types;
  end if;
  if p_schema ? 'const' then
    return array[jsonb_typeof(p_schema->'const')];
  end if;
  if jsonb_typeof(p_schema->'enum') = 'array' then
    return array(
      select distinct jsonb_typeof(v_item)
      from jsonb_array_elements(p_schema->'enum') as t(v_item)
      order by 1
    );
  end if;
  if p_schema ? '$ref' then
    return ballast._json_schema_declared_types(
      p_root, ballast._json_schema_resolve(p_root, p_schema->>'$ref'), p_depth + 1);
  end if;
  if jsonb_typeof(coalesce(p_schema->'anyOf', p_schema->'oneOf')) = 'array' then
    for v_branch in select jsonb_array_elements(coalesce(p_schema->'anyOf', p_schema->'oneOf')) loop
      v_branch_types := ballast._json_schema_declared_types(p_root, v_branch, p_depth + 1);
      if v_branch_types is null then
        return null;
      end if;
      v_types := v_types || v_branch_types;
    end loop;
    return v_types;
  end if;
  return null;
end
$fn$;
grant execute on function ballast._json_schema_declared_types(jsonb,jsonb,integer) to ballast_client, ballast_operator, ballast_reporter;

-- ballast._json_schema_declared_values
-- Takes the root schema and a schema; returns a JSON array of the only values
-- the schema accepts when it is a literal (`const`, `enum`, `$ref` to one, or
-- a union made only of literals), otherwise null. Raises nothing.
create function ballast._json_schema_declared_values(
  p_root jsonb,
  p_schema jsonb,
  p_depth integer default 0
) returns jsonb
language plpgsql immutable parallel safe
as $fn$
declare
  v_values jsonb := '[]';
  v_branch jsonb;
  v_branch_values jsonb;
begin
  if p_depth > 32 or jsonb_typeof(p_schema) is distinct from 'object' then
    return null;
  end if;
  if p_schema ? 'const' then
    return jsonb_build_array(p_schema->'const');
  end if;
  if jsonb_typeof(p_schema->'enum') = 'array' then
    return p_schema->'enum';
  end if;
  if p_schema ? '$ref' then
    return ballast._json_schema_declared_values(
      p_root, ballast._json_schema_resolve(p_root, p_schema->>'$ref'), p_depth + 1);
  end if;
  if jsonb_typeof(coalesce(p_schema->'anyOf', p_schema->'oneOf')) = 'array' then
    for v_branch in select jsonb_array_elements(coalesce(p_schema->'anyOf', p_schema->'oneOf')) loop
      v_branch_values := ballast._json_schema_declared_values(p_root, v_branch, p_depth + 1);
      if v_branch_values is null then
        return null;
      end if;
      v_values := v_values || v_branch_values;
    end loop;
    return v_values;
  end if;
  return null;
end
$fn$;
grant execute on function ballast._json_schema_declared_values(jsonb,jsonb,integer) to ballast_client, ballast_operator, ballast_reporter;

-- ballast._json_schema_value_list
-- Takes a JSON array of values; returns them as `"a", "b", 3`, each shortened by _json_schema_show, listing at most
-- 10 of them and none once the list is 240 characters long, then `, ... (N more)`. Raises nothing.
create function ballast._json_schema_value_list(p_values jsonb) returns text
language sql immutable parallel safe
as $fn$
  with v_shown as (
    select v_i, ballast._json_schema_show(p_values -> v_i) as v_text
    from generate_series(0, least(jsonb_array_length(p_values), 10) - 1) as g(v_i)
  ), v_listed as (
    select v_i, v_text
    from (select v_i, v_text, sum(char_length(v_text) + 2) over (order by v_i) - char_length(v_text) - 2 as v_before
          from v_shown) as r
    where v_before < 240 or v_i = 0
  )
  select coalesce((select string_agg(v_text, ', ' order by v_i) from v_listed), '')
    || case when jsonb_array_length(p_values) > (select count(*) from v_listed)
         then ', ... (' || (jsonb_array_length(p_values) - (select count(*) from v_listed)) || ' more)' else '' end
$fn$;
grant execute on function ballast._json_schema_value_list(jsonb) to ballast_client, ballast_operator, ballast_reporter;

-- ballast._json_schema_one_of_values
-- Takes a JSON array of allowed values and the value found; returns the message `must be one of "a", "b"; got "c"`
-- (or `must be "a"; got "c"` for a single allowed value). At most 10 allowed values are listed, followed by
-- `... (N more)`; each value is shortened by _json_schema_show. Raises nothing.
create function ballast._json_schema_one_of_values(p_allowed jsonb, p_value jsonb) returns text
language sql immutable parallel safe
as $fn$
  select case when jsonb_array_length(p_allowed) = 1 then 'must be ' else 'must be one of ' end
    || ballast._json_schema_value_list(p_allowed)
    || '; got ' || ballast._json_schema_show(p_value)
$fn$;
grant execute on function ballast._json_schema_one_of_values(jsonb,jsonb) to ballast_client, ballast_operator, ballast_reporter;

-- ballast._json_schema_alternatives
-- Takes the root schema, the JSON array of `anyOf`/`oneOf` branches, the value, its path, the recursion depth,
-- whether exactly one branch must match (`oneOf`), the budget and the regex map; returns no rows when the value is
-- acceptable, otherwise the most useful explanation, at most p_budget rows: a single `expected X or Y, got Z` when no
-- branch accepts the value's type, the errors of the only plausible branch (by type, then by discriminator
-- property), or `does not match any allowed shape` followed by the errors of the closest branch. Each branch is
-- walked with the same budget, so "closest" compares error counts capped at it. Raises what the walk raises.
create function ballast._json_schema_alternatives(
  p_root jsonb,
  p_branches jsonb,
  p_value jsonb,
  p_path text,
  p_depth integer,
  p_exactly_one boolean,
  p_budget integer,
  p_regexes jsonb
) returns table(path text, message text)
language plpgsql immutable parallel safe
as $fn$
#variable_conflict use_column
declare
  v_value_type text := jsonb_typeof(p_value);
  v_count integer := jsonb_array_length(p_branches);
  v_errors jsonb[] := '{}';
  v_matched integer[] := '{}';
  v_all_types text[] := '{}';
  v_types text[];
  v_any_type boolean := false;
  v_all_values jsonb := '[]';
  v_values jsonb;
  v_candidates integer[] := '{}';
  v_narrowed integer[];
  v_first jsonb;
  v_branch jsonb;
  v_key text;
  v_disc_key text;
  v_allowed jsonb;
  v_best integer;
  v_i integer;
begin
  if p_budget <= 0 then
    return;
  end if;

  -- evaluate every branch
  for v_i in 1 .. v_count loop
    v_errors := v_errors || ballast._json_schema_collect(
      p_root, p_branches->(v_i - 1), p_value, p_path, p_depth + 1, p_budget, p_regexes);
    if v_errors[v_i] = '[]'::jsonb then
      v_matched := v_matched || v_i;
      if not p_exactly_one then
        return;
      end if;
    end if;
  end loop;

  if cardinality(v_matched) = 1 then
    return;
  elsif cardinality(v_matched) > 1 then
    path := p_path;
    message := 'matches more than one allowed shape (options '
      || array_to_string(v_matched[1:10], ', ')
      || case when cardinality(v_matched) > 10 then ', ...' else '' end
      || '); it must match exactly one';
    return next;
    return;
  end if;

  -- no branch accepts the type of the value: one plain type error
  for v_i in 1 .. v_count loop
    v_types := ballast._json_schema_declared_types(p_root, p_branches->(v_i - 1));
    if v_types is null then
      v_any_type := true;
    else
      v_all_types := v_all_types || v_types;
      if v_value_type = any(v_types) or (v_value_type = 'number' and 'integer' = any(v_types)) then
        v_candidates := v_candidates || v_i;
      end if;
    end if;
    if v_all_values is not null then
      v_values := ballast._json_schema_declared_values(p_root, p_branches->(v_i - 1));
      v_all_values := case when v_values is null then null else v_all_values || v_values end;
    end if;
  end loop;
  if v_any_type then
    v_candidates := array(select generate_series(1, v_count));
  elsif cardinality(v_candidates) = 0 then
    path := p_path;
    message := 'expected ' || ballast._json_schema_cut(ballast._json_schema_type_list(v_all_types))
      || ', got ' || v_value_type;
    return next;
    return;
  end if;

  -- a union of literals: list the allowed values
  if v_all_values is not null and jsonb_array_length(v_all_values) > 0 then
    path := p_path;
    message := ballast._json_schema_one_of_values(v_all_values, p_value);
    return next;
    return;
  end if;

  -- objects: look for a discriminator property (a literal in every candidate)
  if v_value_type = 'object' and cardinality(v_candidates) > 1 then
    v_first := ballast._json_schema_deref(p_root, p_branches->(v_candidates[1] - 1));
    for v_key in
      select k from jsonb_object_keys(
        case when jsonb_typeof(v_first->'properties') = 'object' then v_first->'properties' else '{}' end
      ) as t(k)
    loop
      v_disc_key := v_key;
      foreach v_i in array v_candidates loop
        v_branch := ballast._json_schema_deref(p_root, p_branches->(v_i - 1));
        if ballast._json_schema_declared_values(p_root, v_branch #> array['properties', v_key]) is null then
          v_disc_key := null;
          exit;
        end if;
      end loop;
      exit when v_disc_key is not null;
    end loop;

    if v_disc_key is not null then
      v_narrowed := '{}';
      v_allowed := '[]';
      foreach v_i in array v_candidates loop
        v_branch := ballast._json_schema_deref(p_root, p_branches->(v_i - 1));
        v_values := ballast._json_schema_declared_values(p_root, v_branch #> array['properties', v_disc_key]);
        v_allowed := v_allowed || v_values;
        if p_value ? v_disc_key and v_values @> jsonb_build_array(p_value->v_disc_key) then
          v_narrowed := v_narrowed || v_i;
        end if;
      end loop;
      if cardinality(v_narrowed) = 0 then
        path := ballast._json_schema_path_key(p_path, v_disc_key);
        if p_value ? v_disc_key then
          message := ballast._json_schema_one_of_values(v_allowed, p_value->v_disc_key);
        else
          message := 'required property is missing (must be one of '
            || ballast._json_schema_value_list(v_allowed) || ')';
        end if;
        return next;
        return;
      end if;
      v_candidates := v_narrowed;
    end if;
  end if;

  -- a single plausible branch: its errors are the explanation
  if cardinality(v_candidates) = 1 then
    return query
      select e->>0, e->>1
      from jsonb_array_elements(v_errors[v_candidates[1]]) with ordinality as t(e, ord)
      order by ord
      limit p_budget;
    return;
  end if;

  -- otherwise report the mismatch and the errors of the closest branch: the
  -- fewest errors, counting each property of the value that the branch
  -- declares as one error less (it is probably the shape that was meant)
  select c.i into v_best
  from unnest(v_candidates) with ordinality as c(i, ord)
  order by jsonb_array_length(v_errors[c.i]) - (
      select count(*)
      from jsonb_object_keys(
        case when v_value_type = 'object'
             and jsonb_typeof(ballast._json_schema_deref(p_root, p_branches->(c.i - 1))->'properties') = 'object'
          then ballast._json_schema_deref(p_root, p_branches->(c.i - 1))->'properties'
          else '{}'::jsonb end
      ) as k(key)
      where p_value ? k.key
    ),
    c.ord
  limit 1;
  path := p_path;
  message := 'does not match any of the ' || v_count
    || ' allowed shapes (closest: option ' || v_best || ', whose errors follow)';
  return next;
  return query
    select e->>0, e->>1
    from jsonb_array_elements(v_errors[v_best]) with ordinality as t(e, ord)
    order by ord
    limit p_budget - 1;
end
$fn$;
grant execute on function ballast._json_schema_alternatives(jsonb,jsonb,jsonb,text,integer,boolean,integer,jsonb) to ballast_client, ballast_operator, ballast_reporter;

-- ballast._json_schema_walk
-- Takes the root schema (for `$ref`), the subschema to apply, the value, the value's path, the recursion depth,
-- the budget (the most rows this call may return; 0 or less returns nothing) and the regex map of
-- _json_schema_regexes; returns one row (path, message) per violation, in walk order, at most p_budget of them,
-- and stops working as soon as the budget is spent. No rows when the value conforms.
-- Raises program_limit_exceeded when schemas nest deeper than 256 levels (for example a `$ref` cycle that never
-- descends into the value).
create function ballast._json_schema_walk(
  p_root jsonb,
  p_schema jsonb,
  p_value jsonb,
  p_path text,
  p_depth integer,
  p_budget integer,
  p_regexes jsonb
) returns table(path text, message text)
language plpgsql immutable parallel safe
as $fn$
#variable_conflict use_column
declare
  v_left integer := p_budget;
  v_got bigint;
  v_type text := jsonb_typeof(p_value);
  v_types text[];
  v_limit jsonb;
  v_max jsonb;
  v_num numeric;
  v_str text;
  v_len integer;
  v_count integer;
  v_key text;
  v_sub jsonb;
  v_item jsonb;
  v_prefix jsonb;
  v_prefix_len integer := 0;
  v_rest jsonb;
  v_required text[];
  v_matched boolean;
  v_pattern text;
  v_i integer;
  v_j integer;
  v_child_path text;
  v_format text;
begin
  if v_left <= 0 then
    return;
  end if;
  if p_depth > 256 then
    raise exception 'JSON Schema validation nested too deeply at "%"', p_path
      using detail = 'The value is nested too deeply, or the schema has a $ref cycle that never descends into the value.',
            errcode = 'program_limit_exceeded';
  end if;

  -- boolean schemas
  if jsonb_typeof(p_schema) = 'boolean' then
    if p_schema = 'false'::jsonb then
      path := p_path;
      message := 'no value is allowed here';
      return next;
    end if;
    return;
  end if;
  if jsonb_typeof(p_schema) is distinct from 'object' then
    return;
  end if;

  -- OpenAPI 3.0 style nullable
  if v_type = 'null' and p_schema->'nullable' = 'true'::jsonb then
    return;
  end if;

  -- $ref (siblings still apply, as in draft 2020-12)
  if p_schema ? '$ref' then
    v_sub := ballast._json_schema_resolve(p_root, p_schema->>'$ref');
    if v_sub is null then
      path := p_path;
      message := 'contract error: cannot resolve $ref ' || ballast._json_schema_show(p_schema->'$ref');
      return next;
      v_left := v_left - 1;
    else
      return query select * from ballast._json_schema_walk(
        p_root, v_sub, p_value, p_path, p_depth + 1, v_left, p_regexes);
      get diagnostics v_got = row_count;
      v_left := v_left - v_got;
    end if;
    if v_left <= 0 then
      return;
    end if;
  end if;

  -- type: on a mismatch nothing else at this level is worth reporting
  if p_schema ? 'type' then
    if jsonb_typeof(p_schema->'type') = 'array' then
      v_types := array(select jsonb_array_elements_text(p_schema->'type'));
    else
      v_types := array[p_schema->>'type'];
    end if;
    if not (
      v_type = any(v_types)
      or (v_type = 'number' and 'integer' = any(v_types) and (p_value::numeric % 1) = 0)
    ) then
      path := p_path;
      if v_type = 'number' and 'integer' = any(v_types) then
        message := 'must be an integer; got ' || ballast._json_schema_show(p_value);
      else
        message := 'expected ' || ballast._json_schema_cut(ballast._json_schema_type_list(v_types))
          || ', got ' || v_type;
      end if;
      return next;
      return;
    end if;
  end if;

  -- const / enum
  if p_schema ? 'const' and p_value is distinct from p_schema->'const' then
    path := p_path;
    message := ballast._json_schema_one_of_values(jsonb_build_array(p_schema->'const'), p_value);
    return next;
    v_left := v_left - 1;
    if v_left <= 0 then
      return;
    end if;
  end if;
  if jsonb_typeof(p_schema->'enum') = 'array'
    and not exists (select 1 from jsonb_array_elements(p_schema->'enum') as t(v_e) where v_e = p_value) then
    path := p_path;
    message := ballast._json_schema_one_of_values(p_schema->'enum', p_value);
    return next;
    v_left := v_left - 1;
    if v_left <= 0 then
      return;
    end if;
  end if;

  -- numbers (a draft 4 boolean exclusiveMinimum/exclusiveMaximum modifies minimum/maximum)
  if v_type = 'number' then
    v_num := p_value::numeric;
    v_limit := p_schema->'minimum';
    if jsonb_typeof(v_limit) = 'number' then
      if p_schema->'exclusiveMinimum' = 'true'::jsonb then
        if v_num <= v_limit::numeric then
          path := p_path;
          message := 'must be > ' || ballast._json_schema_show(v_limit) || '; got ' || ballast._json_schema_show(p_value);
          return next;
          v_left := v_left - 1;
        end if;
      elsif v_num < v_limit::numeric then
        path := p_path;
        message := 'must be >= ' || ballast._json_schema_show(v_limit) || '; got ' || ballast._json_schema_show(p_value);
        return next;
        v_left := v_left - 1;
      end if;
    end if;
    v_limit := p_schema->'exclusiveMinimum';
    if v_left > 0 and jsonb_typeof(v_limit) = 'number' and v_num <= v_limit::numeric then
      path := p_path;
      message := 'must be > ' || ballast._json_schema_show(v_limit) || '; got ' || ballast._json_schema_show(p_value);
      return next;
      v_left := v_left - 1;
    end if;
    v_limit := p_schema->'maximum';
    if v_left > 0 and jsonb_typeof(v_limit) = 'number' then
      if p_schema->'exclusiveMaximum' = 'true'::jsonb then
        if v_num >= v_limit::numeric then
          path := p_path;
          message := 'must be < ' || ballast._json_schema_show(v_limit) || '; got ' || ballast._json_schema_show(p_value);
          return next;
          v_left := v_left - 1;
        end if;
      elsif v_num > v_limit::numeric then
        path := p_path;
        message := 'must be <= ' || ballast._json_schema_show(v_limit) || '; got ' || ballast._json_schema_show(p_value);
        return next;
        v_left := v_left - 1;
      end if;
    end if;
    v_limit := p_schema->'exclusiveMaximum';
    if v_left > 0 and jsonb_typeof(v_limit) = 'number' and v_num >= v_limit::numeric then
      path := p_path;
      message := 'must be < ' || ballast._json_schema_show(v_limit) || '; got ' || ballast._json_schema_show(p_value);
      return next;
      v_left := v_left - 1;
    end if;
    v_limit := p_schema->'multipleOf';
    -- the quotient may miss an integer by binary floating-point noise, as
    -- JavaScript computes 0.1 * 3 = 0.30000000000000004; zod accepts that too
    if v_left > 0 and jsonb_typeof(v_limit) = 'number' and v_limit::numeric > 0
      and v_num % v_limit::numeric <> 0
      and abs(v_num / v_limit::numeric - round(v_num / v_limit::numeric))
          > 1e-9 * greatest(1, abs(v_num / v_limit::numeric)) then
      path := p_path;
      message := 'must be a multiple of ' || ballast._json_schema_show(v_limit)
        || '; got ' || ballast._json_schema_show(p_value);
      return next;
      v_left := v_left - 1;
    end if;
    if v_left <= 0 then
      return;
    end if;
  end if;

  -- strings
  if v_type = 'string' then
    v_str := p_value #>> '{}';
    v_len := char_length(v_str);
    v_limit := p_schema->'minLength';
    if jsonb_typeof(v_limit) = 'number' and v_len < v_limit::numeric then
      path := p_path;
      message := 'must have at least ' || ballast._json_schema_show(v_limit)
        || case when v_limit::numeric = 1 then ' character' else ' characters' end
        || '; got ' || v_len;
      return next;
      v_left := v_left - 1;
    end if;
    v_limit := p_schema->'maxLength';
    if v_left > 0 and jsonb_typeof(v_limit) = 'number' and v_len > v_limit::numeric then
      path := p_path;
      message := 'must have at most ' || ballast._json_schema_show(v_limit)
        || case when v_limit::numeric = 1 then ' character' else ' characters' end
        || '; got ' || v_len;
      return next;
      v_left := v_left - 1;
    end if;
    if v_left > 0 and jsonb_typeof(p_schema->'pattern') = 'string' then
      v_pattern := p_schema->>'pattern';
      if ballast._json_schema_match(v_str, v_pattern, p_regexes) = false then
        path := p_path;
        v_format := p_schema->>'format';
        message := case v_format
          when 'email' then 'must be a valid email address'
          when 'uuid' then 'must be a valid UUID'
          when 'guid' then 'must be a valid GUID'
          when 'date-time' then 'must be an ISO 8601 date-time (e.g. 2024-01-31T12:00:00Z)'
          when 'date' then 'must be an ISO 8601 date (YYYY-MM-DD)'
          when 'time' then 'must be an ISO 8601 time (HH:MM[:SS])'
          when 'duration' then 'must be an ISO 8601 duration (e.g. P1DT2H)'
          when 'ipv4' then 'must be a valid IPv4 address'
          when 'ipv6' then 'must be a valid IPv6 address'
          when 'cidrv4' then 'must be a valid IPv4 CIDR range'
          when 'cidrv6' then 'must be a valid IPv6 CIDR range'
          when 'e164' then 'must be an E.164 phone number (e.g. +14155552671)'
          when 'base64' then 'must be base64-encoded'
          when 'base64url' then 'must be base64url-encoded'
          when 'hex' then 'must be a hexadecimal string'
          when 'hostname' then 'must be a valid hostname'
          when 'emoji' then 'must consist of emoji'
          when 'jwt' then 'must be a JWT'
          when 'nanoid' then 'must be a valid nanoid'
          when 'ulid' then 'must be a valid ULID'
          when 'cuid' then 'must be a valid CUID'
          when 'cuid2' then 'must be a valid CUID2'
          when 'ksuid' then 'must be a valid KSUID'
          when 'lowercase' then 'must not contain upper-case letters'
          when 'uppercase' then 'must not contain lower-case letters'
          else 'must match pattern ' || ballast._json_schema_cut(v_pattern)
        end || '; got ' || ballast._json_schema_show(p_value);
        return next;
        v_left := v_left - 1;
      end if;
    end if;
    if v_left <= 0 then
      return;
    end if;
  end if;

  -- arrays
  if v_type = 'array' then
    v_count := jsonb_array_length(p_value);
    v_limit := p_schema->'minItems';
    if jsonb_typeof(v_limit) = 'number' and v_count < v_limit::numeric then
      path := p_path;
      message := 'must have at least ' || ballast._json_schema_show(v_limit) || ' item(s); got ' || v_count;
      return next;
      v_left := v_left - 1;
    end if;
    v_limit := p_schema->'maxItems';
    if v_left > 0 and jsonb_typeof(v_limit) = 'number' and v_count > v_limit::numeric then
      path := p_path;
      message := 'must have at most ' || ballast._json_schema_show(v_limit) || ' item(s); got ' || v_count;
      return next;
      v_left := v_left - 1;
    end if;
    if v_left <= 0 then
      return;
    end if;

    -- tuple part: prefixItems (2020-12) or an items array (draft 7)
    if jsonb_typeof(p_schema->'prefixItems') = 'array' then
      v_prefix := p_schema->'prefixItems';
      v_rest := p_schema->'items';
    elsif jsonb_typeof(p_schema->'items') = 'array' then
      v_prefix := p_schema->'items';
      v_rest := p_schema->'additionalItems';
    else
      v_prefix := '[]';
      v_rest := p_schema->'items';
    end if;
    v_prefix_len := jsonb_array_length(v_prefix);
    if v_prefix_len > 0 or v_rest is not null then
      for v_i in 0 .. v_count - 1 loop
        v_child_path := p_path || '[' || v_i || ']';
        if v_i < v_prefix_len then
          return query select * from ballast._json_schema_walk(
            p_root, v_prefix->v_i, p_value->v_i, v_child_path, p_depth + 1, v_left, p_regexes);
          get diagnostics v_got = row_count;
          v_left := v_left - v_got;
        elsif v_rest is null then
          exit;
        elsif v_rest = 'false'::jsonb then
          -- zod's tuples also set maxItems, which has already reported this
          exit when jsonb_typeof(p_schema->'maxItems') = 'number'
            and (p_schema->'maxItems')::numeric <= v_prefix_len;
          path := v_child_path;
          message := 'unexpected item (not allowed by the contract, which allows at most '
            || v_prefix_len || ' item(s))';
          return next;
          v_left := v_left - 1;
        else
          return query select * from ballast._json_schema_walk(
            p_root, v_rest, p_value->v_i, v_child_path, p_depth + 1, v_left, p_regexes);
          get diagnostics v_got = row_count;
          v_left := v_left - v_got;
        end if;
        if v_left <= 0 then
          return;
        end if;
      end loop;
    end if;

    -- one sort finds every repeated item and its first occurrence (jsonb equality: 1 = 1.0, key order ignored)
    if p_schema->'uniqueItems' = 'true'::jsonb then
      for v_i, v_j in
        select d.ord - 1, d.first_ord - 1
        from (
          select e.ord, min(e.ord) over (partition by e.item) as first_ord
          from jsonb_array_elements(p_value) with ordinality as e(item, ord)
        ) as d
        where d.ord > d.first_ord
        order by d.ord
        limit v_left
      loop
        path := p_path || '[' || v_i || ']';
        message := 'duplicate item (same as item ' || v_j || '); items must be unique';
        return next;
        v_left := v_left - 1;
      end loop;
      if v_left <= 0 then
        return;
      end if;
    end if;

    if p_schema ? 'contains' then
      v_limit := coalesce(p_schema->'minContains', '1'::jsonb);
      v_max := p_schema->'maxContains';
      if jsonb_typeof(v_limit) <> 'number' then
        v_limit := '1'::jsonb;
      end if;
      if jsonb_typeof(v_max) <> 'number' then
        v_max := null;
      end if;
      v_len := 0;
      v_matched := false;
      for v_item in select jsonb_array_elements(p_value) loop
        if ballast._json_schema_valid(p_root, p_schema->'contains', v_item, p_depth + 1, p_regexes) then
          v_len := v_len + 1;
          -- the answer is known once the minimum is reached and the maximum is either absent or exceeded
          v_matched := v_len >= v_limit::numeric and (v_max is null or v_len > v_max::numeric);
          exit when v_matched;
        end if;
      end loop;
      if v_len < v_limit::numeric then
        path := p_path;
        message := 'must contain at least ' || ballast._json_schema_show(v_limit)
          || ' item(s) of the required shape; got ' || v_len;
        return next;
        v_left := v_left - 1;
      end if;
      if v_left > 0 and v_max is not null and v_len > v_max::numeric then
        path := p_path;
        message := 'must contain at most ' || ballast._json_schema_show(v_max)
          || ' item(s) of the given shape; got ' || v_len || case when v_matched then ' or more' else '' end;
        return next;
        v_left := v_left - 1;
      end if;
      if v_left <= 0 then
        return;
      end if;
    end if;
  end if;

  -- objects
  if v_type = 'object' then
    if p_schema ? 'minProperties' or p_schema ? 'maxProperties' then
      v_count := (select count(*) from jsonb_object_keys(p_value));
      v_limit := p_schema->'minProperties';
      if jsonb_typeof(v_limit) = 'number' and v_count < v_limit::numeric then
        path := p_path;
        message := 'must have at least ' || ballast._json_schema_show(v_limit) || ' property(ies); got ' || v_count;
        return next;
        v_left := v_left - 1;
      end if;
      v_limit := p_schema->'maxProperties';
      if v_left > 0 and jsonb_typeof(v_limit) = 'number' and v_count > v_limit::numeric then
        path := p_path;
        message := 'must have at most ' || ballast._json_schema_show(v_limit) || ' property(ies); got ' || v_count;
        return next;
        v_left := v_left - 1;
      end if;
      if v_left <= 0 then
        return;
      end if;
    end if;

    if jsonb_typeof(p_schema->'required') = 'array' then
      v_required := array(select jsonb_array_elements_text(p_schema->'required'));
    else
      v_required := '{}';
    end if;

    -- declared properties, reporting missing required ones in the same pass
    if jsonb_typeof(p_schema->'properties') = 'object' then
      for v_key, v_sub in select * from jsonb_each(p_schema->'properties') loop
        v_child_path := ballast._json_schema_path_key(p_path, v_key);
        if p_value ? v_key then
          return query select * from ballast._json_schema_walk(
            p_root, v_sub, p_value->v_key, v_child_path, p_depth + 1, v_left, p_regexes);
          get diagnostics v_got = row_count;
          v_left := v_left - v_got;
        elsif v_key = any(v_required) then
          path := v_child_path;
          message := 'required property is missing';
          return next;
          v_left := v_left - 1;
        end if;
        if v_left <= 0 then
          return;
        end if;
      end loop;
    end if;
    -- required properties that are not declared in properties
    foreach v_key in array v_required loop
      if not (p_value ? v_key)
        and not coalesce((p_schema->'properties') ? v_key, false) then
        path := ballast._json_schema_path_key(p_path, v_key);
        message := 'required property is missing';
        return next;
        v_left := v_left - 1;
        if v_left <= 0 then
          return;
        end if;
      end if;
    end loop;

    -- every present key: propertyNames, patternProperties, additionalProperties
    if p_schema ? 'propertyNames' or p_schema ? 'patternProperties' or p_schema ? 'additionalProperties' then
      for v_key, v_item in select * from jsonb_each(p_value) loop
        v_child_path := ballast._json_schema_path_key(p_path, v_key);
        if p_schema ? 'propertyNames' then
          return query
            select v_child_path, 'invalid property name: ' || w.message
            from ballast._json_schema_walk(p_root, p_schema->'propertyNames', to_jsonb(v_key), v_child_path,
                                           p_depth + 1, v_left, p_regexes)
              with ordinality as w(path, message, ord)
            order by w.ord;
          get diagnostics v_got = row_count;
          v_left := v_left - v_got;
          if v_left <= 0 then
            return;
          end if;
        end if;
        v_matched := coalesce((p_schema->'properties') ? v_key, false);
        if jsonb_typeof(p_schema->'patternProperties') = 'object' then
          for v_pattern, v_sub in select * from jsonb_each(p_schema->'patternProperties') loop
            if ballast._json_schema_match(v_key, v_pattern, p_regexes) then
              v_matched := true;
              return query select * from ballast._json_schema_walk(
                p_root, v_sub, v_item, v_child_path, p_depth + 1, v_left, p_regexes);
              get diagnostics v_got = row_count;
              v_left := v_left - v_got;
              if v_left <= 0 then
                return;
              end if;
            end if;
          end loop;
        end if;
        if not v_matched and p_schema ? 'additionalProperties' then
          if p_schema->'additionalProperties' = 'false'::jsonb then
            path := v_child_path;
            message := 'unknown property (not allowed by the contract)';
            return next;
            v_left := v_left - 1;
          else
            return query select * from ballast._json_schema_walk(
              p_root, p_schema->'additionalProperties', v_item, v_child_path, p_depth + 1, v_left, p_regexes);
            get diagnostics v_got = row_count;
            v_left := v_left - v_got;
          end if;
          if v_left <= 0 then
            return;
          end if;
        end if;
      end loop;
    end if;
  end if;

  -- combinators
  if jsonb_typeof(p_schema->'allOf') = 'array' then
    for v_sub in select jsonb_array_elements(p_schema->'allOf') loop
      return query select * from ballast._json_schema_walk(
        p_root, v_sub, p_value, p_path, p_depth + 1, v_left, p_regexes);
      get diagnostics v_got = row_count;
      v_left := v_left - v_got;
      if v_left <= 0 then
        return;
      end if;
    end loop;
  end if;
  if jsonb_typeof(p_schema->'anyOf') = 'array' then
    return query select * from ballast._json_schema_alternatives(
      p_root, p_schema->'anyOf', p_value, p_path, p_depth, false, v_left, p_regexes);
    get diagnostics v_got = row_count;
    v_left := v_left - v_got;
    if v_left <= 0 then
      return;
    end if;
  end if;
  if jsonb_typeof(p_schema->'oneOf') = 'array' then
    return query select * from ballast._json_schema_alternatives(
      p_root, p_schema->'oneOf', p_value, p_path, p_depth, true, v_left, p_regexes);
    get diagnostics v_got = row_count;
    v_left := v_left - v_got;
    if v_left <= 0 then
      return;
    end if;
  end if;
  if p_schema ? 'not' then
    if ballast._json_schema_valid(p_root, p_schema->'not', p_value, p_depth + 1, p_regexes) then
      path := p_path;
      message := case
        when p_schema->'not' in ('{}'::jsonb, 'true'::jsonb) then 'no value is allowed here'
        else 'must not match the excluded shape'
      end;
      return next;
      v_left := v_left - 1;
      if v_left <= 0 then
        return;
      end if;
    end if;
  end if;
  if p_schema ? 'if' then
    if ballast._json_schema_valid(p_root, p_schema->'if', p_value, p_depth + 1, p_regexes) then
      if p_schema ? 'then' then
        return query select * from ballast._json_schema_walk(
          p_root, p_schema->'then', p_value, p_path, p_depth + 1, v_left, p_regexes);
      end if;
    elsif p_schema ? 'else' then
      return query select * from ballast._json_schema_walk(
        p_root, p_schema->'else', p_value, p_path, p_depth + 1, v_left, p_regexes);
    end if;
  end if;
end
$fn$;
grant execute on function ballast._json_schema_walk(jsonb,jsonb,jsonb,text,integer,integer,jsonb) to ballast_client, ballast_operator, ballast_reporter;

-- ballast._json_schema_collect
-- Takes the same arguments as ballast._json_schema_walk; returns that walk's errors (at most p_budget) as a JSON
-- array of [path, message] pairs in walk order (empty array when the value is valid). Raises what the walk raises.
create function ballast._json_schema_collect(
  p_root jsonb,
  p_schema jsonb,
  p_value jsonb,
  p_path text,
  p_depth integer,
  p_budget integer,
  p_regexes jsonb
) returns jsonb
language sql immutable parallel safe
as $fn$
  select coalesce(jsonb_agg(jsonb_build_array(w.path, w.message) order by w.ord), '[]'::jsonb)
  from ballast._json_schema_walk(p_root, p_schema, p_value, p_path, p_depth, p_budget, p_regexes)
    with ordinality as w(path, message, ord)
$fn$;
grant execute on function ballast._json_schema_collect(jsonb,jsonb,jsonb,text,integer,integer,jsonb) to ballast_client, ballast_operator, ballast_reporter;

-- ballast.json_schema_errors
-- Takes a JSON Schema (draft 2020-12, e.g. from zod's toJSONSchema) and a value; returns one row (path, message) per
-- violation, in a deterministic walk order, and no rows when the value conforms. `path` is relative to the value:
-- '' for the value itself, then `name`, `customer.address.zip`, `items[2].qty`, `["weird key"]`. A null p_value is
-- validated as JSON null.
-- At most 100 violations are returned: the walk stops working when it finds the 101st, and then one extra final
-- row follows with path '' and message 'stopped after 100 violations; the value may have more' (so 101 rows mean
-- "more than 100"). Messages are at most 500 characters.
-- Raises program_limit_exceeded for schemas that recurse without progress.
create function ballast.json_schema_errors(p_schema jsonb, p_value jsonb) returns table(path text, message text)
language plpgsql immutable parallel safe
as $fn$
#variable_conflict use_column
declare
  c_max_violations constant integer := 100;
  v_rows integer := 0;
  -- translating every pattern of the schema up front pays off only when the value has many strings to check
  v_regexes jsonb := case when pg_column_size(p_value) > 4096 then ballast._json_schema_regexes(p_schema)
                          else '{}'::jsonb end;
begin
  for path, message in
    select w.path, w.message
    from ballast._json_schema_walk(p_schema, p_schema, coalesce(p_value, 'null'::jsonb), '', 0,
                                   c_max_violations + 1, v_regexes)
      with ordinality as w(path, message, ord)
    order by w.ord
  loop
    v_rows := v_rows + 1;
    if v_rows > c_max_violations then
      path := '';
      message := 'stopped after ' || c_max_violations || ' violations; the value may have more';
    elsif char_length(message) > 500 then
      message := left(message, 497) || '...';
    end if;
    return next;
  end loop;
end
$fn$;
grant execute on function ballast.json_schema_errors(jsonb,jsonb) to ballast_client, ballast_operator, ballast_reporter;

-- ballast._json_schema_cut
-- Takes a text from the schema (a pattern, a type name); returns it unchanged when it has at most 60 characters,
-- otherwise its first 57 characters and `...`. Raises nothing.
create function ballast._json_schema_cut(p_text text) returns text
language sql immutable parallel safe
as $fn$
  select case when char_length(p_text) > 60 then left(p_text, 57) || '...' else p_text end
$fn$;
grant execute on function ballast._json_schema_cut(text) to ballast_client, ballast_operator, ballast_reporter;

-- ballast._json_schema_regexes
-- Takes a schema; returns a JSON object mapping every regex in it (the values of `pattern` keywords and the keys of
-- `patternProperties`) to its Postgres translation (_json_schema_js_regex), or to JSON null when Postgres cannot
-- compile it. Strings that merely look like patterns (e.g. a property named "pattern") may be included too; that
-- costs a translation and is harmless. Raises nothing.
create function ballast._json_schema_regexes(p_schema jsonb) returns jsonb
language plpgsql immutable parallel safe
as $fn$
declare
  v_map jsonb := '{}';
  v_pattern text;
  v_regex text;
begin
  for v_pattern in
    select distinct v_found #>> '{}'
    from jsonb_path_query(p_schema, 'lax $.**.pattern ? (@.type() == "string")') as t(v_found)
    union
    select v_found #>> '{}'
    from jsonb_path_query(p_schema, 'lax $.**.patternProperties.keyvalue().key') as t(v_found)
  loop
    v_regex := ballast._json_schema_js_regex(v_pattern);
    begin
      perform '' ~ v_regex;
      v_map := v_map || jsonb_build_object(v_pattern, v_regex);
    exception
      when invalid_regular_expression or program_limit_exceeded then
        v_map := v_map || jsonb_build_object(v_pattern, null);
    end;
  end loop;
  return v_map;
end
$fn$;
grant execute on function ballast._json_schema_regexes(jsonb) to ballast_client, ballast_operator, ballast_reporter;

-- ballast._json_schema_match
-- Takes a string, a JSON Schema `pattern` (ECMAScript syntax) and the map made by _json_schema_regexes; returns true
-- when the string matches (unanchored search, as JSON Schema specifies), false when it does not, and null when the
-- pattern cannot be compiled or run by Postgres. A pattern missing from the map is translated here. Raises nothing.
create function ballast._json_schema_match(p_string text, p_pattern text, p_regexes jsonb) returns boolean
language plpgsql immutable parallel safe
as $fn$
declare
  v_regex jsonb := p_regexes -> p_pattern;
begin
  if v_regex is null then
    v_regex := to_jsonb(ballast._json_schema_js_regex(p_pattern));
  elsif jsonb_typeof(v_regex) <> 'string' then
    return null;
  end if;
  return p_string ~ (v_regex #>> '{}');
exception
  when invalid_regular_expression or program_limit_exceeded then
    return null;
end
$fn$;
grant execute on function ballast._json_schema_match(text,text,jsonb) to ballast_client, ballast_operator, ballast_reporter;

-- ballast._json_schema_valid
-- Takes the root schema, a subschema, a value, the recursion depth and the regex map; returns true when the value
-- conforms to the subschema. Walks with a budget of one row, so it stops at the first violation. Raises what the
-- walk raises.
create function ballast._json_schema_valid(
  p_root jsonb,
  p_schema jsonb,
  p_value jsonb,
  p_depth integer,
  p_regexes jsonb
) returns boolean
language sql immutable parallel safe
as $fn$
  select not exists (
    select 1 from ballast._json_schema_walk(p_root, p_schema, p_value, '', p_depth, 1, p_regexes)
  )
$fn$;
grant execute on function ballast._json_schema_valid(jsonb,jsonb,jsonb,integer,jsonb) to ballast_client, ballast_operator, ballast_reporter;
