-- embedplat.search: the k records nearest to a query vector, best chunk per record.
--
-- Bound to the collection's active model: the query must have that model's dimension, and only
-- that model's vectors are compared. The vector expression and the predicate repeat the partial
-- HNSW index's definition exactly (embedding::vector(N), collection_id = C AND model_id = M), so
-- they are spliced in as literals (numbers from the catalogue, never user text) and the planner
-- can use the index; user values (query, filter, limits) are always bound parameters.
--
-- hnsw.iterative_scan = relaxed_order lets the index scan continue past ef_search candidates
-- when the metadata filter rejects rows, so a filtered search still returns k rows whenever k
-- records match. It is set with set_config(..., is_local => true): it ends with the
-- transaction and never leaks to the next query on a pooled connection.

CREATE TYPE embedplat.search_hit AS (
    id text,            -- the record's external id
    chunk text,         -- text of the record's best-matching chunk
    similarity float8,  -- cosine similarity, higher = closer (1 - cosine distance)
    metadata jsonb      -- the record's metadata
);

CREATE OR REPLACE FUNCTION embedplat.search(
    collection text,
    query vector,
    k integer DEFAULT 10,
    filter jsonb DEFAULT '{}'::jsonb
)
RETURNS SETOF embedplat.search_hit
LANGUAGE plpgsql
VOLATILE  -- it changes a (transaction-local) setting
PARALLEL UNSAFE
AS $fn$
DECLARE
    col_id integer;
    model_id integer;
    dims integer;
    model_name text;
    fetch_n integer;
    hits embedplat.search_hit[];
    n_hits integer;
    stmt text;
BEGIN
    IF k IS NULL OR k < 1 THEN
        RAISE EXCEPTION 'embedplat.search: k must be at least 1, got %', k
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF query IS NULL THEN
        RAISE EXCEPTION 'embedplat.search: the query vector is NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT c.id, c.active_model_id, m.dimensions, m.name
      INTO col_id, model_id, dims, model_name
      FROM embedplat.collections c
      LEFT JOIN embedplat.embedding_models m ON m.id = c.active_model_id
     WHERE c.name = collection;
    IF col_id IS NULL THEN
        RAISE EXCEPTION 'embedplat.search: no collection named %', quote_literal(collection)
            USING ERRCODE = 'undefined_object';
    END IF;
    IF model_id IS NULL THEN
        RETURN;  -- nothing embedded yet
    END IF;
    IF vector_dims(query) <> dims THEN
        RAISE EXCEPTION 'embedplat.search: the query vector has % dimensions, but collection % is embedded with % (% dimensions); embed the query with that model',
            vector_dims(query), quote_literal(collection), model_name, dims
            USING ERRCODE = 'data_exception';
    END IF;

    PERFORM set_config('hnsw.iterative_scan', 'relaxed_order', true);

    stmt := format($q$
        SELECT array_agg(ROW(b.external_id, b.content, 1 - b.distance, b.metadata)::embedplat.search_hit
                         ORDER BY b.distance),
               max(b.n_hits)
        FROM (
            SELECT x.external_id, x.content, x.distance, x.metadata, x.n_hits
            FROM (
                SELECT DISTINCT ON (h.record_id)
                       r.external_id, ch.content, h.distance, r.metadata, h.n_hits
                FROM (
                    SELECT s.*, count(*) OVER () AS n_hits
                    FROM (
                        SELECT e.record_id, e.chunk_id,
                               (e.embedding::vector(%1$s)) <=> $1 AS distance
                        FROM embedplat.embeddings e
                        JOIN embedplat.records r0 ON r0.id = e.record_id
                        WHERE e.collection_id = %2$s AND e.model_id = %3$s
                          AND r0.metadata @> $2
                        ORDER BY (e.embedding::vector(%1$s)) <=> $1
                        LIMIT $3
                    ) s
                ) h
                JOIN embedplat.records r ON r.id = h.record_id
                JOIN embedplat.chunks ch ON ch.id = h.chunk_id
                ORDER BY h.record_id, h.distance
            ) x
            ORDER BY x.distance
            LIMIT $4
        ) b
    $q$, dims, col_id, model_id);

    -- Fetch a few chunks per wanted record; when chunks of the same records crowd the top,
    -- fetch more until k records are found or the collection is exhausted.
    fetch_n := greatest(k * 4, 40);
    LOOP
        EXECUTE stmt INTO hits, n_hits USING query::vector, coalesce(filter, '{}'::jsonb), fetch_n, k;
        EXIT WHEN coalesce(cardinality(hits), 0) >= k OR coalesce(n_hits, 0) < fetch_n
                  OR fetch_n >= 1000000;
        fetch_n := fetch_n * 4;
    END LOOP;

    RETURN QUERY SELECT * FROM unnest(coalesce(hits, ARRAY[]::embedplat.search_hit[]));
END
$fn$;

COMMENT ON FUNCTION embedplat.search(text, vector, integer, jsonb) IS
    'The k records of a collection nearest to a query vector (best chunk per record), using the collection''s HNSW index; filter is a jsonb containment (@>) on record metadata.';
