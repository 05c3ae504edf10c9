-- Bulk k-NN helpers shared by embedplat.near_duplicates and embedplat.anomaly_scores: one
-- probe per chunk of a collection through the partial ANN index of (collection, model).

-- One k-NN probe: the n chunks of (collection_id, model_id) nearest to query, leaving out the
-- chunks of record exclude_record (0: none) and of the records in exclude_also (NULL: none;
-- near_duplicates passes the other records with the probing record's content, so that its own
-- exact copies cannot fill the n places), through the partial index, which the statement
-- matches by repeating its expression and predicate (numbers spliced in with format('%s')).
--
-- A PARALLEL SAFE function rather than an inline LATERAL (... ORDER BY ... LIMIT n) subquery:
-- PostgreSQL never runs a subquery with LIMIT inside a parallel worker, but it does call a
-- parallel-safe function there, so a bulk caller (a scan of every chunk with this function in
-- a LATERAL join) is split across parallel workers. The callers set the index knobs (ef_search,
-- iterative scan) first; parallel workers inherit them.
CREATE OR REPLACE FUNCTION embedplat.nearest_chunks(
    query vector,
    collection_id integer,
    model_id integer,
    dimensions integer,
    exclude_record bigint,
    n integer,
    exclude_also bigint[] DEFAULT NULL
)
RETURNS TABLE (record_id bigint, chunk_id bigint, distance float8)
LANGUAGE plpgsql
STABLE
PARALLEL SAFE
ROWS 10
COST 200000  -- an index probe: about what the planner charges for the index scan itself
AS $fn$
BEGIN
    RETURN QUERY EXECUTE format($q$
        SELECT e.record_id, e.chunk_id, (e.embedding::vector(%1$s)) <=> $1
        FROM embedplat.embeddings e
        WHERE e.collection_id = %2$s AND e.model_id = %3$s AND e.record_id <> $2
          AND ($4::bigint[] IS NULL OR e.record_id <> ALL ($4))
        ORDER BY (e.embedding::vector(%1$s)) <=> $1
        LIMIT $3
    $q$, dimensions, collection_id, model_id) USING query, exclude_record, n, exclude_also;
END
$fn$;

-- One k-NN probe reduced to a score: the mean distance from query to its k nearest records of
-- (collection_id, model_id) other than exclude_record, each record at the distance of its
-- closest chunk among the n nearest chunks (n >= k leaves room for neighbours with several
-- chunks; when those n chunks hold fewer than k records, the mean is over the records found;
-- NULL when none). A scalar PARALLEL SAFE function, so that a scan of every chunk calling it
-- runs in parallel workers (see nearest_chunks above).
CREATE OR REPLACE FUNCTION embedplat.nearest_records_mean_distance(
    query vector,
    collection_id integer,
    model_id integer,
    dimensions integer,
    exclude_record bigint,
    n integer,
    k integer
)
RETURNS float8
LANGUAGE plpgsql
STABLE
PARALLEL SAFE
COST 200000
AS $fn$
DECLARE
    result float8;
BEGIN
    EXECUTE format($q$
        SELECT avg(d.distance)
        FROM (
            SELECT min(c.distance) AS distance
            FROM (
                SELECT e.record_id, (e.embedding::vector(%1$s)) <=> $1 AS distance
                FROM embedplat.embeddings e
                WHERE e.collection_id = %2$s AND e.model_id = %3$s AND e.record_id <> $2
                ORDER BY (e.embedding::vector(%1$s)) <=> $1
                LIMIT $3
            ) c
            GROUP BY c.record_id
            ORDER BY 1
            LIMIT $4
        ) d
    $q$, dimensions, collection_id, model_id) INTO result USING query, exclude_record, n, k;
    RETURN result;
END
$fn$;

-- hnsw.ef_search for bulk probes: the collection's index_options, else a value the session set
-- explicitly, else max(2k, 20) -- below pgvector's default of 40 for small k, which makes a
-- probe about a third cheaper at no measurable loss of recall (benchmarks/bench_analytics.py)
-- -- and never below k, so that every probe can return k rows.
CREATE OR REPLACE FUNCTION embedplat.bulk_probe_ef_search(index_options jsonb, k integer)
RETURNS integer
LANGUAGE sql
STABLE
AS $fn$
    SELECT least(greatest(coalesce(
               (index_options ->> 'ef_search')::integer,
               (SELECT s.setting::integer FROM pg_settings s
                 WHERE s.name = 'hnsw.ef_search' AND s.source <> 'default'),
               greatest(2 * k, 20)), k), 1000)
$fn$;
