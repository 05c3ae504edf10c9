-- The metadata filter language, version 3 of its file: limits on a filter's size and depth.
--
-- filters.v2.sql stays the definition of the language; this file adds
-- embedplat.filter_check_limits and a compile_filter that calls it before anything else, so
-- every function taking a filter (search, hybrid_search, similar, metadata_matches) refuses
--   * a filter nesting JSON objects and arrays deeper than 32 levels (the filter object itself
--     counting 1): compile_filter_node recurses once per level, and 5,000 nested $not ran the
--     server out of stack ("stack depth limit exceeded", a 1,000-line error);
--   * a filter of more than 1,000 nodes (filter objects + conditions): a $or of 20,000 branches
--     took 35 s to compile and evaluate on 200 records.
-- Both numbers are embedplat.filters.MAX_FILTER_DEPTH / MAX_FILTER_NODES in Python (one source,
-- compared by tests/integration/test_sql_docs.py) and are documented in docs/filters.md.
-- Errors: SQLSTATE 22023, messages starting with "embedplat filter:" as for every filter error.

-- Refuse a filter over the limits, without recursion and without visiting more than the limit
-- allows: the depth through a jsonpath (is there a container at level 32, i.e. 33 deep?), the
-- nodes by a breadth-first walk over the filter objects that stops as soon as the nodes counted
-- plus the filter objects still waiting (each at least one node) pass the limit.
CREATE OR REPLACE FUNCTION embedplat.filter_check_limits(filter jsonb)
RETURNS void
LANGUAGE plpgsql
IMMUTABLE PARALLEL SAFE
AS $fn$
DECLARE
    max_depth constant integer := 32;
    max_nodes constant integer := 1000;
    queue jsonb[];
    head integer := 1;
    nodes integer := 0;
    node jsonb;
    entry record;
BEGIN
    IF filter IS NULL THEN
        RETURN;
    END IF;
    IF jsonb_path_exists(filter, format(
            'strict $.**{%s} ? (@.type() == "object" || @.type() == "array")', max_depth)::jsonpath) THEN
        RAISE EXCEPTION 'embedplat filter: the filter is nested too deeply, limit % levels of objects and arrays', max_depth
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    queue := ARRAY[filter];
    WHILE head <= cardinality(queue) LOOP
        node := queue[head];
        head := head + 1;
        nodes := nodes + 1;
        IF jsonb_typeof(node) = 'object' THEN
            FOR entry IN SELECT e.key, e.value FROM jsonb_each(node) AS e LOOP
                IF entry.key IN ('$and', '$or') AND jsonb_typeof(entry.value) = 'array' THEN
                    -- Counted before they join the queue: 20,000 branches are never copied.
                    nodes := nodes + jsonb_array_length(entry.value);
                    EXIT WHEN nodes + cardinality(queue) - head + 1 > max_nodes;
                    queue := queue || ARRAY(SELECT x.v FROM jsonb_array_elements(entry.value) AS x(v));
                    nodes := nodes - jsonb_array_length(entry.value);
                ELSIF entry.key = '$not' THEN
                    queue := queue || entry.value;
                ELSIF NOT starts_with(entry.key, '$') THEN
                    -- One condition per operator, or one for a plain value.
                    nodes := nodes + CASE
                        WHEN jsonb_typeof(entry.value) = 'object' THEN greatest(1, (
                            SELECT count(*) FROM jsonb_object_keys(entry.value) AS k(k)
                             WHERE starts_with(k.k, '$'))::integer)
                        ELSE 1 END;
                END IF;
                EXIT WHEN nodes + cardinality(queue) - head + 1 > max_nodes;
            END LOOP;
        END IF;
        -- The nodes counted, plus the filter objects waiting in the queue (one node at least).
        IF nodes + cardinality(queue) - head + 1 > max_nodes THEN
            RAISE EXCEPTION 'embedplat filter: the filter is too large: more than % nodes (filter objects and conditions); use $in for a list of values', max_nodes
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END LOOP;
END
$fn$;

-- compile_filter as in filters.v2.sql, after the limits are checked (compile_filter_node
-- recurses per level and appends per node, so it only ever sees a bounded filter).
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
    PERFORM embedplat.filter_check_limits(filter);
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
