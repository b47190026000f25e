-- Up Migration

-- 0002: JSON Schema validation inside Postgres.
--
-- Every pipeline stores its input contract as JSON Schema (draft 2020-12, as
-- produced by zod 4's `z.toJSONSchema(schema, { io: 'input' })`). This
-- migration adds a validator written in plain PL/pgSQL (no extensions), so a
-- job's input can be checked at the database boundary: jobs inserted directly
-- with SQL by other systems get exactly the same checks as jobs submitted
-- through the TypeScript API.
--
-- The validator collects every violation (it never stops at the first one)
-- and reports each as (path, message), with paths such as `customer.zip`,
-- `items[2].qty` or `["weird key"]`, relative to the validated value.
--
-- Supported keywords: type, enum, const, minimum, maximum, exclusiveMinimum,
-- exclusiveMaximum, multipleOf, minLength, maxLength, pattern, properties,
-- required, additionalProperties, patternProperties, propertyNames,
-- minProperties, maxProperties, items, prefixItems, additionalItems (draft 7
-- tuples), minItems, maxItems, uniqueItems, contains, minContains,
-- maxContains, allOf, anyOf, oneOf, not, if/then/else, $ref (`#`, `#/$defs/...`,
-- `#/definitions/...`), boolean schemas and OpenAPI `nullable`. Annotations
-- (title, description, default, examples, $schema, ...) and unknown keywords
-- are ignored; `format` only words the message when its `pattern` fails (zod
-- emits a pattern for each format it checks). Patterns are JavaScript regexes:
-- they are translated to Postgres regex syntax where the two differ, and a
-- pattern Postgres cannot compile (e.g. `\p{...}` in z.emoji()) is skipped
-- rather than failing the validation. String lengths count characters (code
-- points), as JSON Schema specifies; zod counts UTF-16 code units, so the two
-- differ only for characters outside the Basic Multilingual Plane (emoji).


-- ballast._json_schema_path_key
-- Takes a parent path and an object key; returns the child path: `key` at the
-- root, `parent.key` for identifier-like keys, `parent["any key"]` otherwise.
-- Raises nothing.
create or replace function ballast._json_schema_path_key(p_path text, p_key text)
returns text
language sql
immutable
parallel safe
as $fn$
  select case
    when p_key ~ '^[A-Za-z_$][A-Za-z0-9_$]*$' then
      case when p_path = '' then p_key else p_path || '.' || p_key end
    else p_path || '[' || to_jsonb(p_key)::text || ']'
  end
$fn$;


-- ballast._json_schema_show
-- Takes any JSON value; returns its JSON text for use in error messages,
-- shortened to about 60 characters. Raises nothing.
create or replace function ballast._json_schema_show(p_value jsonb)
returns text
language sql
immutable
parallel safe
as $fn$
  select case
    when char_length(p_value::text) > 60 then left(p_value::text, 57) || '...'
    else p_value::text
  end
$fn$;


-- ballast._json_schema_type_list
-- Takes a list of JSON Schema type names; returns them as English, e.g.
-- `string`, `string or null`, `string, number or null` (duplicates removed,
-- `integer` dropped when `number` is also allowed). Raises nothing.
create or replace function ballast._json_schema_type_list(p_types text[])
returns text
language plpgsql
immutable
parallel safe
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


-- ballast._json_schema_js_regex
-- Takes an ECMAScript regex source (JSON Schema `pattern`); returns the
-- equivalent Postgres ARE where the two dialects differ: `\b`/`\B` become
-- `\y`/`\Y`, `\d` and `\w` become their ASCII classes, `\xHH` becomes `\u00HH`
-- and `.` stops matching line terminators. Anything Postgres cannot express
-- (e.g. `\p{...}`, named groups) is left as is, so compiling it fails and the
-- caller skips the check. Raises nothing.
create or replace function ballast._json_schema_js_regex(p_pattern text)
returns text
language plpgsql
immutable
parallel safe
as $fn$
declare
  v_out text := '';
  v_len integer := char_length(p_pattern);
  v_i integer := 1;
  v_ch text;
  v_next text;
  v_in_class boolean := false;
begin
  while v_i <= v_len loop
    v_ch := substr(p_pattern, v_i, 1);
    if v_ch = '\' and v_i < v_len then
      v_next := substr(p_pattern, v_i + 1, 1);
      if v_next = 'd' then
        v_out := v_out || case when v_in_class then '0-9' else '[0-9]' end;
      elsif v_next = 'w' then
        v_out := v_out || case when v_in_class then 'A-Za-z0-9_' else '[A-Za-z0-9_]' end;
      elsif v_next = 'D' and not v_in_class then
        v_out := v_out || '[^0-9]';
      elsif v_next = 'W' and not v_in_class then
        v_out := v_out || '[^A-Za-z0-9_]';
      elsif v_next = 'b' and not v_in_class then
        v_out := v_out || '\y';
      elsif v_next = 'B' and not v_in_class then
        v_out := v_out || '\Y';
      elsif v_next = 'x' and substr(p_pattern, v_i + 2, 2) ~ '^[0-9A-Fa-f]{2}$' then
        v_out := v_out || '\u00' || substr(p_pattern, v_i + 2, 2);
        v_i := v_i + 2;
      else
        v_out := v_out || v_ch || v_next;
      end if;
      v_i := v_i + 2;
      continue;
    end if;
    if v_in_class then
      if v_ch = ']' then
        v_in_class := false;
      end if;
      v_out := v_out || v_ch;
    elsif v_ch = '[' then
      v_in_class := true;
      v_out := v_out || v_ch;
      -- a leading `^` (negation) is copied as is; a `]` right after `[` or
      -- `[^` closes an empty class in JavaScript, which Postgres rejects.
      if substr(p_pattern, v_i + 1, 1) = '^' then
        v_out := v_out || '^';
        v_i := v_i + 1;
      end if;
    elsif v_ch = '.' then
      v_out := v_out || '[^\n\r\u2028\u2029]';
    else
      v_out := v_out || v_ch;
    end if;
    v_i := v_i + 1;
  end loop;
  return v_out;
end
$fn$;


-- ballast._json_schema_matches
-- Takes a string and a JSON Schema `pattern` (ECMAScript syntax); returns
-- true when the string matches (unanchored search, as JSON Schema specifies),
-- false when it does not, and null when the pattern cannot be compiled by
-- Postgres. Raises nothing for bad patterns.
create or replace function ballast._json_schema_matches(p_string text, p_pattern text)
returns boolean
language plpgsql
immutable
parallel safe
as $fn$
begin
  return p_string ~ ballast._json_schema_js_regex(p_pattern);
exception
  when invalid_regular_expression or program_limit_exceeded then
    return null;
end
$fn$;


-- ballast._json_schema_resolve
-- Takes the root schema and a `$ref` value; returns the referenced subschema
-- for `#` and JSON pointers such as `#/$defs/Node` or `#/definitions/Node`,
-- or null when the reference is external or points nowhere. Raises nothing.
create or replace function ballast._json_schema_resolve(p_root jsonb, p_ref text)
returns jsonb
language sql
immutable
parallel safe
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


-- ballast._json_schema_deref
-- Takes the root schema and a schema; follows `$ref` (up to 32 hops) and
-- returns the first schema that is not a pure reference, or null when a
-- reference cannot be resolved. Raises nothing.
create or replace function ballast._json_schema_deref(p_root jsonb, p_schema jsonb)
returns jsonb
language plpgsql
immutable
parallel safe
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


-- ballast._json_schema_declared_types
-- Takes the root schema and a schema; returns the JSON types the schema can
-- accept at its top level (from `type`, `const`, `enum`, `$ref` and the
-- branches of `anyOf`/`oneOf`), or null when it does not restrict the type.
-- Used to explain union failures. Raises nothing.
create or replace function ballast._json_schema_declared_types(
  p_root jsonb,
  p_schema jsonb,
  p_depth integer default 0
)
returns text[]
language plpgsql
immutable
parallel safe
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


-- ballast._json_schema_declared_values
-- Takes the root schema and a schema; returns a JSON array of the only values
-- the schema accepts when it is a literal (`const`, `enum`, `$ref` to one, or
-- a union made only of literals), otherwise null. Raises nothing.
create or replace function ballast._json_schema_declared_values(
  p_root jsonb,
  p_schema jsonb,
  p_depth integer default 0
)
returns jsonb
language plpgsql
immutable
parallel safe
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


-- ballast._json_schema_one_of_values
-- Takes a JSON array of allowed values and the value found; returns the
-- message `must be one of "a", "b"; got "c"` (or `must be "a"; got "c"` for a
-- single allowed value). Raises nothing.
create or replace function ballast._json_schema_one_of_values(p_allowed jsonb, p_value jsonb)
returns text
language sql
immutable
parallel safe
as $fn$
  select case when jsonb_array_length(p_allowed) = 1 then 'must be ' else 'must be one of ' end
    || (
      select string_agg(ballast._json_schema_show(v_item), ', ' order by v_ord)
      from jsonb_array_elements(p_allowed) with ordinality as t(v_item, v_ord)
    )
    || '; got ' || ballast._json_schema_show(p_value)
$fn$;


-- ballast._json_schema_alternatives
-- Takes the root schema, the JSON array of `anyOf`/`oneOf` branches, the
-- value, its path, the recursion depth and whether exactly one branch must
-- match (`oneOf`); returns no rows when the value is acceptable, otherwise the
-- most useful explanation: a single `expected X or Y, got Z` when no branch
-- accepts the value's type, the errors of the only plausible branch (by type,
-- then by discriminator property), or `does not match any allowed shape`
-- followed by the errors of the closest branch. Raises what the walk raises.
create or replace function ballast._json_schema_alternatives(
  p_root jsonb,
  p_branches jsonb,
  p_value jsonb,
  p_path text,
  p_depth integer,
  p_exactly_one boolean
)
returns table(path text, message text)
language plpgsql
immutable
parallel safe
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
  -- evaluate every branch
  for v_i in 1 .. v_count loop
    v_errors := v_errors || ballast._json_schema_collect(
      p_root, p_branches->(v_i - 1), p_value, p_path, p_depth + 1);
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
      || array_to_string(v_matched, ', ') || '); it must match exactly one';
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
    message := 'expected ' || ballast._json_schema_type_list(v_all_types) || ', got ' || v_value_type;
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
            || (select string_agg(ballast._json_schema_show(v_item), ', ' order by v_ord)
                from jsonb_array_elements(v_allowed) with ordinality as t(v_item, v_ord))
            || ')';
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
      order by ord;
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
    order by ord;
end
$fn$;


-- ballast._json_schema_walk
-- Takes the root schema (for `$ref`), the subschema to apply, the value, the
-- value's path and the recursion depth; returns one row (path, message) per
-- violation, in walk order, and no rows when the value conforms.
-- Raises program_limit_exceeded when schemas nest deeper than 256 levels
-- (for example a `$ref` cycle that never descends into the value).
create or replace function ballast._json_schema_walk(
  p_root jsonb,
  p_schema jsonb,
  p_value jsonb,
  p_path text,
  p_depth integer default 0
)
returns table(path text, message text)
language plpgsql
immutable
parallel safe
as $fn$
#variable_conflict use_column
declare
  v_type text := jsonb_typeof(p_value);
  v_types text[];
  v_limit jsonb;
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
  v_match boolean;
  v_pattern text;
  v_i integer;
  v_j integer;
  v_child_path text;
  v_format text;
begin
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
    else
      return query select * from ballast._json_schema_walk(p_root, v_sub, p_value, p_path, p_depth + 1);
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
        message := 'expected ' || ballast._json_schema_type_list(v_types) || ', got ' || v_type;
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
  end if;
  if jsonb_typeof(p_schema->'enum') = 'array'
    and not exists (select 1 from jsonb_array_elements(p_schema->'enum') as t(v_e) where v_e = p_value) then
    path := p_path;
    message := ballast._json_schema_one_of_values(p_schema->'enum', p_value);
    return next;
  end if;

  -- numbers
  if v_type = 'number' then
    v_num := p_value::numeric;
    v_limit := p_schema->'minimum';
    if jsonb_typeof(v_limit) = 'number' then
      if p_schema->'exclusiveMinimum' = 'true'::jsonb then
        if v_num <= v_limit::numeric then
          path := p_path;
          message := 'must be > ' || v_limit::text || '; got ' || ballast._json_schema_show(p_value);
          return next;
        end if;
      elsif v_num < v_limit::numeric then
        path := p_path;
        message := 'must be >= ' || v_limit::text || '; got ' || ballast._json_schema_show(p_value);
        return next;
      end if;
    end if;
    v_limit := p_schema->'exclusiveMinimum';
    if jsonb_typeof(v_limit) = 'number' and v_num <= v_limit::numeric then
      path := p_path;
      message := 'must be > ' || v_limit::text || '; got ' || ballast._json_schema_show(p_value);
      return next;
    end if;
    v_limit := p_schema->'maximum';
    if jsonb_typeof(v_limit) = 'number' then
      if p_schema->'exclusiveMaximum' = 'true'::jsonb then
        if v_num >= v_limit::numeric then
          path := p_path;
          message := 'must be < ' || v_limit::text || '; got ' || ballast._json_schema_show(p_value);
          return next;
        end if;
      elsif v_num > v_limit::numeric then
        path := p_path;
        message := 'must be <= ' || v_limit::text || '; got ' || ballast._json_schema_show(p_value);
        return next;
      end if;
    end if;
    v_limit := p_schema->'exclusiveMaximum';
    if jsonb_typeof(v_limit) = 'number' and v_num >= v_limit::numeric then
      path := p_path;
      message := 'must be < ' || v_limit::text || '; got ' || ballast._json_schema_show(p_value);
      return next;
    end if;
    v_limit := p_schema->'multipleOf';
    -- the quotient may miss an integer by binary floating-point noise, as
    -- JavaScript computes 0.1 * 3 = 0.30000000000000004; zod accepts that too
    if jsonb_typeof(v_limit) = 'number' and v_limit::numeric > 0
      and v_num % v_limit::numeric <> 0
      and abs(v_num / v_limit::numeric - round(v_num / v_limit::numeric))
          > 1e-9 * greatest(1, abs(v_num / v_limit::numeric)) then
      path := p_path;
      message := 'must be a multiple of ' || v_limit::text || '; got ' || ballast._json_schema_show(p_value);
      return next;
    end if;
  end if;

  -- strings
  if v_type = 'string' then
    v_str := p_value #>> '{}';
    v_len := char_length(v_str);
    v_limit := p_schema->'minLength';
    if jsonb_typeof(v_limit) = 'number' and v_len < v_limit::numeric then
      path := p_path;
      message := 'must have at least ' || v_limit::text
        || case when v_limit::numeric = 1 then ' character' else ' characters' end
        || '; got ' || v_len;
      return next;
    end if;
    v_limit := p_schema->'maxLength';
    if jsonb_typeof(v_limit) = 'number' and v_len > v_limit::numeric then
      path := p_path;
      message := 'must have at most ' || v_limit::text
        || case when v_limit::numeric = 1 then ' character' else ' characters' end
        || '; got ' || v_len;
      return next;
    end if;
    if jsonb_typeof(p_schema->'pattern') = 'string' then
      v_pattern := p_schema->>'pattern';
      if ballast._json_schema_matches(v_str, v_pattern) = false then
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
          else 'must match pattern ' || v_pattern
        end || '; got ' || ballast._json_schema_show(p_value);
        return next;
      end if;
    end if;
  end if;

  -- arrays
  if v_type = 'array' then
    v_count := jsonb_array_length(p_value);
    v_limit := p_schema->'minItems';
    if jsonb_typeof(v_limit) = 'number' and v_count < v_limit::numeric then
      path := p_path;
      message := 'must have at least ' || v_limit::text || ' item(s); got ' || v_count;
      return next;
    end if;
    v_limit := p_schema->'maxItems';
    if jsonb_typeof(v_limit) = 'number' and v_count > v_limit::numeric then
      path := p_path;
      message := 'must have at most ' || v_limit::text || ' item(s); got ' || v_count;
      return next;
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
    for v_i in 0 .. v_count - 1 loop
      v_child_path := p_path || '[' || v_i || ']';
      if v_i < v_prefix_len then
        return query select * from ballast._json_schema_walk(
          p_root, v_prefix->v_i, p_value->v_i, v_child_path, p_depth + 1);
      elsif v_rest = 'false'::jsonb then
        -- zod's tuples also set maxItems, which has already reported this
        continue when jsonb_typeof(p_schema->'maxItems') = 'number'
          and (p_schema->'maxItems')::numeric <= v_prefix_len;
        path := v_child_path;
        message := 'unexpected item (not allowed by the contract, which allows at most '
          || v_prefix_len || ' item(s))';
        return next;
      elsif v_rest is not null then
        return query select * from ballast._json_schema_walk(
          p_root, v_rest, p_value->v_i, v_child_path, p_depth + 1);
      end if;
    end loop;

    if p_schema->'uniqueItems' = 'true'::jsonb then
      for v_i, v_j in
        select later.ord - 1, (
            select min(earlier.ord) - 1
            from jsonb_array_elements(p_value) with ordinality as earlier(item, ord)
            where earlier.item = later.item and earlier.ord < later.ord
          )
        from jsonb_array_elements(p_value) with ordinality as later(item, ord)
        order by later.ord
      loop
        if v_j is not null then
          path := p_path || '[' || v_i || ']';
          message := 'duplicate item (same as item ' || v_j || '); items must be unique';
          return next;
        end if;
      end loop;
    end if;

    if p_schema ? 'contains' then
      v_len := 0;
      for v_item in select jsonb_array_elements(p_value) loop
        if not exists (
          select 1 from ballast._json_schema_walk(p_root, p_schema->'contains', v_item, p_path, p_depth + 1)
        ) then
          v_len := v_len + 1;
        end if;
      end loop;
      v_limit := coalesce(p_schema->'minContains', '1'::jsonb);
      if jsonb_typeof(v_limit) = 'number' and v_len < v_limit::numeric then
        path := p_path;
        message := 'must contain at least ' || v_limit::text
          || ' item(s) of the required shape; got ' || v_len;
        return next;
      end if;
      v_limit := p_schema->'maxContains';
      if jsonb_typeof(v_limit) = 'number' and v_len > v_limit::numeric then
        path := p_path;
        message := 'must contain at most ' || v_limit::text
          || ' item(s) of the given shape; got ' || v_len;
        return next;
      end if;
    end if;
  end if;

  -- objects
  if v_type = 'object' then
    v_count := (select count(*) from jsonb_object_keys(p_value));
    v_limit := p_schema->'minProperties';
    if jsonb_typeof(v_limit) = 'number' and v_count < v_limit::numeric then
      path := p_path;
      message := 'must have at least ' || v_limit::text || ' property(ies); got ' || v_count;
      return next;
    end if;
    v_limit := p_schema->'maxProperties';
    if jsonb_typeof(v_limit) = 'number' and v_count > v_limit::numeric then
      path := p_path;
      message := 'must have at most ' || v_limit::text || ' property(ies); got ' || v_count;
      return next;
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
            p_root, v_sub, p_value->v_key, v_child_path, p_depth + 1);
        elsif v_key = any(v_required) then
          path := v_child_path;
          message := 'required property is missing';
          return next;
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
      end if;
    end loop;

    -- every present key: propertyNames, patternProperties, additionalProperties
    if p_schema ? 'propertyNames' or p_schema ? 'patternProperties' or p_schema ? 'additionalProperties' then
      for v_key, v_item in select * from jsonb_each(p_value) loop
        v_child_path := ballast._json_schema_path_key(p_path, v_key);
        if p_schema ? 'propertyNames' then
          return query
            select v_child_path, 'invalid property name: ' || w.message
            from ballast._json_schema_walk(p_root, p_schema->'propertyNames', to_jsonb(v_key), v_child_path, p_depth + 1)
              with ordinality as w(path, message, ord)
            order by w.ord;
        end if;
        v_matched := coalesce((p_schema->'properties') ? v_key, false);
        if jsonb_typeof(p_schema->'patternProperties') = 'object' then
          for v_pattern, v_sub in select * from jsonb_each(p_schema->'patternProperties') loop
            v_match := ballast._json_schema_matches(v_key, v_pattern);
            if v_match then
              v_matched := true;
              return query select * from ballast._json_schema_walk(
                p_root, v_sub, v_item, v_child_path, p_depth + 1);
            end if;
          end loop;
        end if;
        if not v_matched and p_schema ? 'additionalProperties' then
          if p_schema->'additionalProperties' = 'false'::jsonb then
            path := v_child_path;
            message := 'unknown property (not allowed by the contract)';
            return next;
          else
            return query select * from ballast._json_schema_walk(
              p_root, p_schema->'additionalProperties', v_item, v_child_path, p_depth + 1);
          end if;
        end if;
      end loop;
    end if;
  end if;

  -- combinators
  if jsonb_typeof(p_schema->'allOf') = 'array' then
    for v_sub in select jsonb_array_elements(p_schema->'allOf') loop
      return query select * from ballast._json_schema_walk(p_root, v_sub, p_value, p_path, p_depth + 1);
    end loop;
  end if;
  if jsonb_typeof(p_schema->'anyOf') = 'array' then
    return query select * from ballast._json_schema_alternatives(
      p_root, p_schema->'anyOf', p_value, p_path, p_depth, false);
  end if;
  if jsonb_typeof(p_schema->'oneOf') = 'array' then
    return query select * from ballast._json_schema_alternatives(
      p_root, p_schema->'oneOf', p_value, p_path, p_depth, true);
  end if;
  if p_schema ? 'not' then
    if not exists (
      select 1 from ballast._json_schema_walk(p_root, p_schema->'not', p_value, p_path, p_depth + 1)
    ) then
      path := p_path;
      message := case
        when p_schema->'not' in ('{}'::jsonb, 'true'::jsonb) then 'no value is allowed here'
        else 'must not match the excluded shape'
      end;
      return next;
    end if;
  end if;
  if p_schema ? 'if' then
    if not exists (
      select 1 from ballast._json_schema_walk(p_root, p_schema->'if', p_value, p_path, p_depth + 1)
    ) then
      if p_schema ? 'then' then
        return query select * from ballast._json_schema_walk(
          p_root, p_schema->'then', p_value, p_path, p_depth + 1);
      end if;
    elsif p_schema ? 'else' then
      return query select * from ballast._json_schema_walk(
        p_root, p_schema->'else', p_value, p_path, p_depth + 1);
    end if;
  end if;
end
$fn$;


-- ballast._json_schema_collect
-- Takes the same arguments as ballast._json_schema_walk; returns that walk's
-- errors as a JSON array of [path, message] pairs in walk order (empty array
-- when the value is valid). Raises what the walk raises.
create or replace function ballast._json_schema_collect(
  p_root jsonb,
  p_schema jsonb,
  p_value jsonb,
  p_path text,
  p_depth integer
)
returns jsonb
language sql
immutable
parallel safe
as $fn$
  select coalesce(jsonb_agg(jsonb_build_array(w.path, w.message) order by w.ord), '[]'::jsonb)
  from ballast._json_schema_walk(p_root, p_schema, p_value, p_path, p_depth)
    with ordinality as w(path, message, ord)
$fn$;


-- ballast.json_schema_errors
-- Takes a JSON Schema (draft 2020-12, e.g. from zod's toJSONSchema) and a
-- value; returns one row (path, message) per violation, in a deterministic
-- walk order, and no rows when the value conforms. `path` is relative to the
-- value: '' for the value itself, then `name`, `customer.address.zip`,
-- `items[2].qty`, `["weird key"]`. A null p_value is validated as JSON null.
-- Raises program_limit_exceeded for schemas that recurse without progress.
create or replace function ballast.json_schema_errors(p_schema jsonb, p_value jsonb)
returns table(path text, message text)
language sql
immutable
parallel safe
as $fn$
  select w.path, w.message
  from ballast._json_schema_walk(p_schema, p_schema, coalesce(p_value, 'null'::jsonb), '', 0)
    with ordinality as w(path, message, ord)
  order by w.ord
$fn$;
