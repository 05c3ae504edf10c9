-- The metadata filter language, version 2: one executable definition, the compiler.
--
-- One language for SQL, Python (embedplat.filters) and the CLI (--filter); docs/filters.md is
-- the reference. A filter is a JSON object; its entries must all hold (AND):
--
--   {"topic": "sport"}                  plain value: jsonb containment at that key
--   {"author.name": "x"}                dotted keys walk into nested objects (and array indexes)
--   {"year": {"$gte": 2020}}            operators: $eq $ne $gt $gte $lt $lte $in $nin $exists
--   {"$and": [f, ...]}, {"$or": [f, ...]}, {"$not": f}
--
-- embedplat.compile_filter turns a filter into a SQL predicate on records alias r0, built from
-- fixed fragments only: the filter's keys and values never become SQL text, they are elements
-- of array parameters bound by the caller, so quotes, semicolons, % or any Unicode in them are
-- harmless. That predicate is the only executable definition of the language: the search
-- functions run it, and metadata_matches (for SQL users) runs it on one metadata value.
-- Python (embedplat.filters) only validates, for early and precise error messages;
-- tests/integration/test_filter_compiler.py checks the compiler against an independent oracle.
--
-- Compiling visits every clause, so a malformed filter raises the same error whatever the data
-- (also on an empty collection). Errors use SQLSTATE 22023 (invalid_parameter_value) and start
-- with "embedplat filter:".
--
-- v1 also had an interpreter (metadata_matches walking the filter per row, with
-- filter_operator) and metadata_matches_compiled; both are gone (migration 0007), so the
-- language is no longer defined twice.

-- A dotted key as a #> path; empty segments are refused.
CREATE OR REPLACE FUNCTION embedplat.filter_path(key text)
RETURNS text[]
LANGUAGE plpgsql
IMMUTABLE STRICT PARALLEL SAFE
AS $fn$
DECLARE
    path text[] := string_to_array(key, '.');
BEGIN
    IF cardinality(path) = 0 OR '' = ANY (path) THEN
        RAISE EXCEPTION 'embedplat filter: key % has an empty path segment; write nested keys as "a.b"', to_json(key)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN path;
END
$fn$;

-- Whether the value given for a key is a set of operators ({"$gte": 1, "$lt": 9}) rather than a
-- plain value to match; a mix of operators and plain keys is refused.
CREATE OR REPLACE FUNCTION embedplat.filter_value_is_operators(key text, value jsonb)
RETURNS boolean
LANGUAGE plpgsql
IMMUTABLE PARALLEL SAFE
AS $fn$
DECLARE
    n_ops integer;
    n_keys integer;
BEGIN
    IF jsonb_typeof(value) IS DISTINCT FROM 'object' THEN
        RETURN false;
    END IF;
    SELECT count(*) FILTER (WHERE starts_with(k.k, '$')), count(*)
      INTO n_ops, n_keys
      FROM jsonb_object_keys(value) AS k(k);
    IF n_ops > 0 AND n_ops < n_keys THEN
        RAISE EXCEPTION 'embedplat filter: the value at key % mixes operators ($...) and plain keys', to_json(key)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN n_ops > 0;
END
$fn$;

-- Refuse an unknown operator or an argument of the wrong kind (raises; nothing to return).
CREATE OR REPLACE FUNCTION embedplat.filter_check_operator(key text, op text, arg jsonb)
RETURNS void
LANGUAGE plpgsql
IMMUTABLE PARALLEL SAFE
AS $fn$
BEGIN
    CASE op
    WHEN '$eq', '$ne' THEN
        NULL;  -- any JSON value
    WHEN '$gt', '$gte', '$lt', '$lte' THEN
        IF jsonb_typeof(arg) NOT IN ('number', 'string') THEN
            RAISE EXCEPTION 'embedplat filter: % at key % needs a number or a string, got %', op, to_json(key), arg::text
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    WHEN '$in', '$nin' THEN
        IF jsonb_typeof(arg) <> 'array' THEN
            RAISE EXCEPTION 'embedplat filter: % at key % needs an array of values, got %', op, to_json(key), arg::text
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    WHEN '$exists' THEN
        IF jsonb_typeof(arg) <> 'boolean' THEN
            RAISE EXCEPTION 'embedplat filter: $exists at key % needs true or false, got %', to_json(key), arg::text
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    ELSE
        RAISE EXCEPTION 'embedplat filter: unknown operator % at key %; use $eq, $ne, $gt, $gte, $lt, $lte, $in, $nin or $exists', to_json(op), to_json(key)
            USING ERRCODE = 'invalid_parameter_value';
    END CASE;
END
$fn$;

-- Whether a (valid) filter is a plain containment object, so that metadata @> filter is
-- exactly equivalent and can use the GIN index on records.metadata.
CREATE OR REPLACE FUNCTION embedplat.filter_is_containment(filter jsonb)
RETURNS boolean
LANGUAGE sql
IMMUTABLE STRICT PARALLEL SAFE
AS $fn$
    SELECT jsonb_typeof(filter) = 'object' AND NOT EXISTS (
        SELECT 1
        FROM jsonb_each(filter) AS e
        WHERE e.key = ''
           OR starts_with(e.key, '$')
           OR strpos(e.key, '.') > 0
           OR (jsonb_typeof(e.value) = 'object'
               AND EXISTS (SELECT 1 FROM jsonb_object_keys(e.value) AS k(k) WHERE starts_with(k.k, '$'))))
$fn$;

-- The filter as a SQL predicate on records alias r0, for the search functions (and
-- metadata_matches): evaluated natively by the executor, no PL/pgSQL call per row.
--
-- No user text enters the predicate's SQL: it is assembled from fixed fragments and numbers
-- only. The filter's keys and values are referenced as elements of two array parameters,
-- $7 (text[]: the dotted keys) and $8 (jsonb[]: the values), returned as `keys` and `vals` for
-- the caller to bind. A plain containment filter becomes r0.metadata @> $2 (the filter itself
-- bound as parameter $2), which the GIN index on records.metadata can serve.
--
-- `containment`: the filter's plain values at top-level (undotted) keys, as one object; every
-- matching record contains it (metadata @> containment), so the GIN index can narrow the
-- candidates first. '{}' when the filter has none.
CREATE OR REPLACE FUNCTION embedplat.compile_filter(
    filter jsonb,
    OUT predicate text,
    OUT keys text[],
    OUT vals jsonb[],
    OUT is_containment boolean,
    OUT containment jsonb
)
LANGUAGE plpgsql
IMMUTABLE PARALLEL SAFE
AS $fn$
DECLARE
    compiled record;
BEGIN
    keys := '{}';
    vals := '{}';
    is_containment := false;
    containment := '{}';
    IF filter IS NULL OR filter = '{}'::jsonb THEN
        predicate := 'true';
    ELSIF embedplat.filter_is_containment(filter) THEN
        predicate := 'r0.metadata @> $2';
        is_containment := true;
        containment := filter;
    ELSE
        SELECT * INTO compiled FROM embedplat.compile_filter_node(filter, keys, vals);
        predicate := compiled.predicate;
        keys := compiled.keys;
        vals := compiled.vals;
        SELECT coalesce(jsonb_object_agg(e.key, e.value), '{}')
          INTO containment
          FROM jsonb_each(filter) AS e
         WHERE embedplat.filter_is_containment(jsonb_build_object(e.key, e.value));
    END IF;
END
$fn$;

-- One (sub)filter: appends its keys and values to the arrays and returns its predicate.
CREATE OR REPLACE FUNCTION embedplat.compile_filter_node(
    filter jsonb,
    INOUT keys text[],
    INOUT vals jsonb[],
    OUT predicate text
)
LANGUAGE plpgsql
IMMUTABLE PARALLEL SAFE
AS $fn$
DECLARE
    entry record;
    op record;
    item jsonb;
    sub record;
    parts text[] := '{}';
    branches text[];
    target text;
    v text;
BEGIN
    IF jsonb_typeof(filter) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'embedplat filter: a filter must be a JSON object, got %', coalesce(filter::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR entry IN SELECT e.key, e.value FROM jsonb_each(filter) AS e LOOP
        IF entry.key IN ('$and', '$or') THEN
            IF jsonb_typeof(entry.value) <> 'array' OR jsonb_array_length(entry.value) = 0 THEN
                RAISE EXCEPTION 'embedplat filter: % needs a non-empty array of filters, got %', entry.key, entry.value::text
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            branches := '{}';
            FOR item IN SELECT x.v FROM jsonb_array_elements(entry.value) AS x(v) LOOP
                SELECT * INTO sub FROM embedplat.compile_filter_node(item, keys, vals);
                keys := sub.keys;
                vals := sub.vals;
                branches := branches || sub.predicate;
            END LOOP;
            parts := parts || ('(' || array_to_string(
                branches, CASE WHEN entry.key = '$and' THEN ' AND ' ELSE ' OR ' END) || ')');
        ELSIF entry.key = '$not' THEN
            SELECT * INTO sub FROM embedplat.compile_filter_node(entry.value, keys, vals);
            keys := sub.keys;
            vals := sub.vals;
            parts := parts || ('(NOT ' || sub.predicate || ')');
        ELSIF starts_with(entry.key, '$') THEN
            RAISE EXCEPTION 'embedplat filter: unknown logical operator %; use $and, $or or $not (field operators go under a key: {"year": {"$gte": 2020}})', to_json(entry.key)
                USING ERRCODE = 'invalid_parameter_value';
        ELSE
            PERFORM embedplat.filter_path(entry.key);  -- validates the key
            keys := keys || entry.key;
            -- Folded to a constant by the planner: the parameter values are known.
            target := format('(r0.metadata #> string_to_array($7[%s], ''.''))', cardinality(keys));
            IF NOT embedplat.filter_value_is_operators(entry.key, entry.value) THEN
                vals := vals || entry.value;
                parts := parts || format(
                    '(%1$s IS NOT NULL AND jsonb_build_array(%1$s) @> jsonb_build_array($8[%2$s]))',
                    target, cardinality(vals));
                CONTINUE;
            END IF;
            FOR op IN SELECT o.key, o.value FROM jsonb_each(entry.value) AS o LOOP
                PERFORM embedplat.filter_check_operator(entry.key, op.key, op.value);
                vals := vals || op.value;
                v := format('$8[%s]', cardinality(vals));
                parts := parts || CASE op.key
                    WHEN '$eq' THEN format('coalesce(%s = %s, false)', target, v)
                    WHEN '$ne' THEN format('(%s IS DISTINCT FROM %s)', target, v)
                    WHEN '$gt' THEN format('coalesce(jsonb_typeof(%1$s) = jsonb_typeof(%2$s) AND %1$s > %2$s, false)', target, v)
                    WHEN '$gte' THEN format('coalesce(jsonb_typeof(%1$s) = jsonb_typeof(%2$s) AND %1$s >= %2$s, false)', target, v)
                    WHEN '$lt' THEN format('coalesce(jsonb_typeof(%1$s) = jsonb_typeof(%2$s) AND %1$s < %2$s, false)', target, v)
                    WHEN '$lte' THEN format('coalesce(jsonb_typeof(%1$s) = jsonb_typeof(%2$s) AND %1$s <= %2$s, false)', target, v)
                    WHEN '$exists' THEN
                        CASE WHEN op.value = 'true'::jsonb THEN format('(%s IS NOT NULL)', target)
                             ELSE format('(%s IS NULL)', target) END
                    ELSE format(  -- $in / $nin
                        '%3$scoalesce(%1$s IS NOT NULL AND CASE WHEN jsonb_typeof(%1$s) IN (''object'', ''array'') '
                        'THEN EXISTS (SELECT 1 FROM jsonb_array_elements(%2$s) AS fx(v) WHERE fx.v = %1$s) '
                        'OR (jsonb_typeof(%1$s) = ''array'' AND EXISTS (SELECT 1 FROM jsonb_array_elements(%2$s) AS fx(v) '
                        'JOIN jsonb_array_elements(%1$s) AS ft(v) ON ft.v = fx.v)) '
                        'ELSE %2$s @> jsonb_build_array(%1$s) END, false)',
                        target, v, CASE WHEN op.key = '$nin' THEN 'NOT ' ELSE '' END)
                END;
            END LOOP;
        END IF;
    END LOOP;
    predicate := CASE WHEN cardinality(parts) = 0 THEN 'true'
                      ELSE '(' || array_to_string(parts, ' AND ') || ')' END;
END
$fn$;

-- Whether one metadata value satisfies a filter: the compiled predicate (above) run on it, so
-- SQL users get exactly what the search functions apply. NULL metadata matches only what a
-- missing key would.
CREATE OR REPLACE FUNCTION embedplat.metadata_matches(metadata jsonb, filter jsonb)
RETURNS boolean
LANGUAGE plpgsql
IMMUTABLE PARALLEL SAFE
AS $fn$
DECLARE
    compiled record;
    result boolean;
BEGIN
    SELECT * INTO compiled FROM embedplat.compile_filter(filter);
    -- The parameters as the search functions bind them: $2 the filter, $7/$8 its keys/values.
    EXECUTE format('SELECT %s FROM (SELECT $1 AS metadata) r0', compiled.predicate)
        INTO result
        USING metadata, filter, NULL::int, NULL::int, NULL::int, NULL::int, compiled.keys, compiled.vals;
    RETURN coalesce(result, false);
END
$fn$;

COMMENT ON FUNCTION embedplat.metadata_matches(jsonb, jsonb) IS
    'Whether record metadata satisfies a filter of the embedplat filter language (docs/filters.md): plain values (containment), dotted keys, $eq $ne $gt $gte $lt $lte $in $nin $exists, $and $or $not. Runs the predicate embedplat.compile_filter makes, as the search functions do.';
