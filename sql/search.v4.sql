-- Search, v4: nearest_hits' exact path looks up chunks, then their vectors, in a fixed order.
--
-- In v2 the exact path (a filter matching few records) joined chunks and embeddings in one
-- LATERAL subquery and let the planner order the join. Before the tables were analyzed (a
-- collection just ingested and synced, until autovacuum's ANALYZE ran) the planner estimated
-- a few vectors per model and scanned all of the model's vectors once per matching record:
-- 0.4 s instead of 3 ms for 40 records of 4,183 chunks. v4 fixes the order: each matching
-- record's chunks (ix_chunks_record_id_ordinal), then each chunk's vector (primary key).
-- Everything else is v2's (search.v2.sql).

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
        -- this is an exact scan. Chunks, then vectors, each in its own LATERAL with OFFSET 0:
        -- as one join, a table not yet analyzed (a collection just loaded, before autovacuum)
        -- got a plan that read every vector of the model once per matching record.
        stmt := embedplat.hits_statement(format($q$
            SELECT x.record_id, x.chunk_id, x.distance
            FROM (%4$s) m
            CROSS JOIN LATERAL (
                SELECT ch0.record_id, ch0.id AS chunk_id
                FROM embedplat.chunks ch0
                WHERE ch0.record_id = m.id
                OFFSET 0  -- a per-record index lookup (no hash join over chunks)
            ) c0
            CROSS JOIN LATERAL (
                SELECT c0.record_id, e.chunk_id, (e.embedding::vector(%1$s)) <=> $1 AS distance
                FROM embedplat.embeddings e
                WHERE e.chunk_id = c0.chunk_id AND e.model_id = %3$s
                OFFSET 0  -- then each chunk's vector by primary key, whatever the statistics say
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
