-- embedplat.search v2: filter language, minimum similarity, per-record or per-chunk results,
-- query-time index knobs. Also the internal helpers that hybrid_search and similar share.
--
-- Bound to the collection's active model: the query must have that model's dimension, and only
-- that model's vectors are compared. The vector expression and the predicate repeat the partial
-- ANN index's definition exactly (embedding::vector(N), collection_id = C AND model_id = M), so
-- they are spliced in with format('%s') as numbers read from the catalogue (never user text)
-- and the planner can use the index; user values (query, filter, limits) are always bound
-- parameters. The metadata filter is compiled by embedplat.compile_filter into a predicate made
-- of fixed fragments only; its keys and values stay bound parameters.
--
-- Query-time knobs: hnsw.iterative_scan / ivfflat.iterative_scan = relaxed_order (so a filtered
-- scan keeps going until k rows pass the filter), hnsw.ef_search and ivfflat.probes (from the
-- arguments, else the collection's index_options, else the session's values). They are set
-- with set_config(..., true), i.e. transaction-local, and put back to their previous values
-- before the function returns, so they neither leak to the caller's next statement in the same
-- transaction nor to the next user of a pooled connection.

CREATE TYPE embedplat.search_hit AS (
    id text,               -- the record's external id
    chunk text,            -- text of the matching chunk (the record's best one when per_record)
    similarity float8,     -- cosine similarity of that chunk, higher = closer (1 - cosine distance)
    metadata jsonb,        -- the record's metadata
    chunk_ordinal integer, -- position of the chunk in its record (0 = first)
    char_start integer,    -- the chunk's span in the record's content
    char_end integer
);

-- The collection's id, active model and index options; raises for an unknown collection.
-- model_id is NULL while nothing is embedded.
CREATE OR REPLACE FUNCTION embedplat.collection_target(
    collection text,
    caller text,
    OUT collection_id integer,
    OUT model_id integer,
    OUT dimensions integer,
    OUT model_name text,
    OUT index_options jsonb
)
LANGUAGE plpgsql
STABLE
AS $fn$
BEGIN
    SELECT c.id, c.active_model_id, m.dimensions, m.name, c.index_options
      INTO collection_target.collection_id, collection_target.model_id,
           collection_target.dimensions, collection_target.model_name,
           collection_target.index_options
      FROM embedplat.collections c
      LEFT JOIN embedplat.embedding_models m ON m.id = c.active_model_id
     WHERE c.name = collection_target.collection;
    IF NOT FOUND THEN
        RAISE EXCEPTION '%: no collection named %', caller, quote_literal(collection)
            USING ERRCODE = 'undefined_object';
    END IF;
END
$fn$;

-- Refuse a query vector of another dimension than the collection's model.
CREATE OR REPLACE FUNCTION embedplat.check_query_dimensions(
    collection text, query vector, dimensions integer, model_name text, caller text
)
RETURNS void
LANGUAGE plpgsql
IMMUTABLE
AS $fn$
BEGIN
    IF vector_dims(query) <> dimensions THEN
        RAISE EXCEPTION '%: the query vector has % dimensions, but collection % is embedded with % (% dimensions); embed the query with that model',
            caller, vector_dims(query), quote_literal(collection), model_name, dimensions
            USING ERRCODE = 'data_exception';
    END IF;
END
$fn$;

-- Set the index knobs for one search; returns the previous values for restore_search_knobs.
CREATE OR REPLACE FUNCTION embedplat.apply_search_knobs(
    index_options jsonb, ef_search integer, probes integer, caller text
)
RETURNS text[]
LANGUAGE plpgsql
VOLATILE
AS $fn$
DECLARE
    ef integer := coalesce(ef_search, (index_options ->> 'ef_search')::integer);
    pr integer := coalesce(probes, (index_options ->> 'probes')::integer);
    saved text[];
BEGIN
    IF ef IS NOT NULL AND (ef < 1 OR ef > 1000) THEN
        RAISE EXCEPTION '%: ef_search must be between 1 and 1000, got %', caller, ef
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF pr IS NOT NULL AND (pr < 1 OR pr > 32768) THEN
        RAISE EXCEPTION '%: probes must be between 1 and 32768, got %', caller, pr
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- missing_ok: before pgvector's library is loaded in this backend the settings do not
    -- exist yet; NULL restores them to their defaults.
    saved := ARRAY[
        current_setting('hnsw.iterative_scan', true),
        current_setting('hnsw.ef_search', true),
        current_setting('ivfflat.iterative_scan', true),
        current_setting('ivfflat.probes', true)
    ];
    PERFORM set_config('hnsw.iterative_scan', 'relaxed_order', true);
    PERFORM set_config('ivfflat.iterative_scan', 'relaxed_order', true);
    IF ef IS NOT NULL THEN
        PERFORM set_config('hnsw.ef_search', ef::text, true);
    END IF;
    IF pr IS NOT NULL THEN
        PERFORM set_config('ivfflat.probes', pr::text, true);
    END IF;
    RETURN saved;
END
$fn$;

CREATE OR REPLACE FUNCTION embedplat.restore_search_knobs(saved text[])
RETURNS void
LANGUAGE plpgsql
VOLATILE
AS $fn$
BEGIN
    PERFORM set_config('hnsw.iterative_scan', saved[1], true);
    PERFORM set_config('hnsw.ef_search', saved[2], true);
    PERFORM set_config('ivfflat.iterative_scan', saved[3], true);
    PERFORM set_config('ivfflat.probes', saved[4], true);
END
$fn$;

-- The statement nearest_hits runs: candidates (the ANN scan, or the exact scan of the
-- matching records), reduced to the best chunk per record when per_record, cut at
-- min_similarity ($6) and k ($4), returned as one array with the candidates' count and the
-- farthest candidate's distance. Parameters: $1 query, $2 filter, $3 candidates wanted,
-- $4 k, $5 record to exclude, $6 maximum distance, $7/$8 the compiled filter's keys/values,
-- $9 the ids of the matching records (when found through the GIN index).
CREATE OR REPLACE FUNCTION embedplat.hits_statement(candidates text, per_record boolean)
RETURNS text
LANGUAGE sql
IMMUTABLE PARALLEL SAFE
AS $fn$
    SELECT format($q$
        WITH cand AS MATERIALIZED (%1$s),
        best AS (
            SELECT d.record_id, d.chunk_id, d.distance
            FROM (%2$s) d
            WHERE $6::float8 IS NULL OR d.distance <= $6
            ORDER BY d.distance, d.record_id, d.chunk_id
            LIMIT $4
        )
        SELECT (SELECT array_agg(ROW(r.external_id, ch.content, 1 - b.distance, r.metadata,
                                     ch.ordinal, ch.char_start, ch.char_end)::embedplat.search_hit
                                 ORDER BY b.distance, b.record_id, b.chunk_id)
                FROM best b
                JOIN embedplat.records r ON r.id = b.record_id
                JOIN embedplat.chunks ch ON ch.id = b.chunk_id),
               (SELECT count(*) FROM cand),
               (SELECT max(c.distance) FROM cand c)
    $q$, candidates,
        CASE WHEN per_record
             THEN 'SELECT DISTINCT ON (c.record_id) c.* FROM cand c ORDER BY c.record_id, c.distance, c.chunk_id'
             ELSE 'SELECT c.* FROM cand c' END)
$fn$;

-- The nearest chunks (or records) of one (collection, model) to a query vector: the shared core
-- of search, similar and hybrid_search. The caller has resolved the collection, checked the
-- arguments and set the knobs. exclude_record: a records.id to leave out (0: none).
--
-- Strategy:
--   * no filter, or a filter matching many records: the ANN index scan (iterative, so the
--     filter is applied to candidates as the scan goes), re-run with more candidates while
--     chunks of the same records crowd the top;
--   * a filter whose plain values (at top-level keys) narrow it to few records, found through
--     the GIN index (fewer than 10 * sqrt(vectors in the table), at least 500): an exact scan of
--     those records' chunks, cheaper than letting the ANN index walk past the many records the
--     filter rejects;
--   * the ANN scan ended short of k (its budget, hnsw.max_scan_tuples, ran out before k
--     candidates passed the filter): the exact scan of the matching records.
CREATE OR REPLACE FUNCTION embedplat.nearest_hits(
    collection_id integer,
    model_id integer,
    dimensions integer,
    query vector,
    k integer,
    filter jsonb,
    min_similarity float8,
    per_record boolean,
    exclude_record bigint
)
RETURNS SETOF embedplat.search_hit
LANGUAGE plpgsql
VOLATILE
AS $fn$
DECLARE
    has_filter boolean := filter IS NOT NULL AND filter <> '{}'::jsonb;
    max_distance float8 := 1 - min_similarity;  -- NULL when no minimum
    compiled record;
    exact_below integer;
    matching bigint[];  -- the matching records' ids, when few (containment filters)
    use_exact boolean := false;
    stmt text;
    fetch_n integer;
    hits embedplat.search_hit[];
    n_candidates bigint;
    worst float8;
BEGIN
    SELECT * INTO compiled FROM embedplat.compile_filter(filter);

    IF compiled.containment <> '{}'::jsonb THEN
        SELECT greatest(500, least(20000, 10 * sqrt(greatest(c.reltuples, 0))))::integer
          INTO exact_below
          FROM pg_class c WHERE c.oid = 'embedplat.embeddings'::regclass;
        -- The GIN index finds the records containing the filter's plain values ($1); the
        -- whole filter then checks them.
        EXECUTE format(
            'SELECT coalesce(array_agg(m.id), ''{}'') FROM (SELECT r0.id FROM embedplat.records r0 '
            'WHERE r0.collection_id = %s AND r0.metadata @> $1 AND %s LIMIT %s) m',
            collection_id, compiled.predicate, exact_below)
            INTO matching
            USING compiled.containment, filter, NULL::integer, NULL::integer, NULL::integer,
                  NULL::integer, compiled.keys, compiled.vals;
        use_exact := cardinality(matching) < exact_below;
        IF NOT use_exact THEN
            matching := NULL;
        END IF;
    END IF;

    IF NOT use_exact THEN
        -- The ANN scan: ORDER BY <the index expression> <=> $1 LIMIT $3 over the partial
        -- index's predicate. Materialized and re-sorted: relaxed_order may return candidates
        -- slightly out of order.
        IF has_filter THEN
            stmt := format($q$
                SELECT e.record_id, e.chunk_id, (e.embedding::vector(%1$s)) <=> $1 AS distance
                FROM embedplat.embeddings e
                JOIN embedplat.records r0 ON r0.id = e.record_id
                WHERE e.collection_id = %2$s AND e.model_id = %3$s AND e.record_id <> $5 AND %4$s
                ORDER BY (e.embedding::vector(%1$s)) <=> $1
                LIMIT $3
            $q$, dimensions, collection_id, model_id, compiled.predicate);
        ELSE
            -- No join at all without a filter: a pure index scan.
            stmt := format($q$
                SELECT e.record_id, e.chunk_id, (e.embedding::vector(%1$s)) <=> $1 AS distance
                FROM embedplat.embeddings e
                WHERE e.collection_id = %2$s AND e.model_id = %3$s AND e.record_id <> $5
                ORDER BY (e.embedding::vector(%1$s)) <=> $1
                LIMIT $3
            $q$, dimensions, collection_id, model_id);
        END IF;
        stmt := embedplat.hits_statement(stmt, per_record);

        -- A few chunks per wanted record; more when chunks of the same records crowd the top,
        -- until k are found, the candidates run out, or they pass min_similarity.
        fetch_n := greatest(k * 4, 40);
        LOOP
            EXECUTE stmt INTO hits, n_candidates, worst
                USING query, filter, fetch_n, k, coalesce(exclude_record, 0), max_distance,
                      compiled.keys, compiled.vals, NULL::bigint[];
            EXIT WHEN coalesce(cardinality(hits), 0) >= k
                   OR n_candidates < fetch_n
                   OR worst > max_distance
                   OR fetch_n >= 1000000;
            fetch_n := fetch_n * 4;
        END LOOP;
        use_exact := has_filter AND coalesce(cardinality(hits), 0) < k
                     AND n_candidates < fetch_n AND NOT coalesce(worst > max_distance, false);
    END IF;

    IF use_exact THEN
        -- The matching records (the ids found above, else the compiled filter over the
        -- collection's records), their chunks (ix_chunks_record_id_ordinal, through the
        -- LATERAL join) and vectors (primary key). "+ 0": an expression no index matches, so
        -- this is an exact scan.
        stmt := embedplat.hits_statement(format($q$
            SELECT x.record_id, x.chunk_id, x.distance
            FROM (%4$s) m
            CROSS JOIN LATERAL (
                SELECT ch0.record_id, e.chunk_id, (e.embedding::vector(%1$s)) <=> $1 AS distance
                FROM embedplat.chunks ch0
                JOIN embedplat.embeddings e ON e.chunk_id = ch0.id AND e.model_id = %3$s
                WHERE ch0.record_id = m.id
                OFFSET 0  -- keeps the join a per-record index lookup (no hash join over chunks)
            ) x
            WHERE m.id <> $5
            ORDER BY x.distance + 0
            LIMIT $3
        $q$, dimensions, collection_id, model_id,
            CASE WHEN matching IS NOT NULL THEN 'SELECT unnest($9) AS id'
                 ELSE format('SELECT r0.id FROM embedplat.records r0 WHERE r0.collection_id = %s AND %s',
                             collection_id, compiled.predicate) END),
            per_record);
        EXECUTE stmt INTO hits, n_candidates, worst
            USING query, filter, 2147483647, k, coalesce(exclude_record, 0), max_distance,
                  compiled.keys, compiled.vals, matching;
    END IF;

    RETURN QUERY SELECT * FROM unnest(coalesce(hits, ARRAY[]::embedplat.search_hit[]));
END
$fn$;

CREATE OR REPLACE FUNCTION embedplat.search(
    collection text,
    query vector,
    k integer DEFAULT 10,
    filter jsonb DEFAULT '{}'::jsonb,
    min_similarity float8 DEFAULT NULL,
    per_record boolean DEFAULT true,
    ef_search integer DEFAULT NULL,
    probes integer DEFAULT NULL
)
RETURNS SETOF embedplat.search_hit
LANGUAGE plpgsql
VOLATILE  -- it changes (transaction-local) settings
PARALLEL UNSAFE
AS $fn$
DECLARE
    target record;
    saved text[];
BEGIN
    IF k IS NULL OR k < 1 OR k > 10000 THEN
        RAISE EXCEPTION 'embedplat.search: k must be between 1 and 10000, got %', k
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF query IS NULL THEN
        RAISE EXCEPTION 'embedplat.search: the query vector is NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF min_similarity IS NOT NULL AND NOT (min_similarity BETWEEN -1 AND 1) THEN
        RAISE EXCEPTION 'embedplat.search: min_similarity must be a cosine similarity between -1 and 1, got %', min_similarity
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM embedplat.metadata_matches('{}'::jsonb, filter);  -- validates every clause
    SELECT * INTO target FROM embedplat.collection_target(collection, 'embedplat.search');
    IF target.model_id IS NULL THEN
        RETURN;  -- nothing embedded yet
    END IF;
    PERFORM embedplat.check_query_dimensions(
        collection, query, target.dimensions, target.model_name, 'embedplat.search');

    saved := embedplat.apply_search_knobs(target.index_options, ef_search, probes, 'embedplat.search');
    RETURN QUERY SELECT * FROM embedplat.nearest_hits(
        target.collection_id, target.model_id, target.dimensions, query, k,
        coalesce(filter, '{}'::jsonb), min_similarity, coalesce(per_record, true), 0);
    PERFORM embedplat.restore_search_knobs(saved);
END
$fn$;

COMMENT ON FUNCTION embedplat.search(text, vector, integer, jsonb, float8, boolean, integer, integer) IS
    'The k records (or chunks, per_record => false) of a collection nearest to a query vector, through the collection''s ANN index; filter in the embedplat filter language (docs/filters.md); see docs/sql.md.';
