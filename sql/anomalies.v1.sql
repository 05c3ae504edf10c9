-- embedplat.anomaly_scores: a k-NN distance score per record, higher = more anomalous.
--
-- Every embedded chunk of the collection looks up its nearest chunks through an HNSW index
-- (one probe per chunk, embedplat.nearest_records_mean_distance(...), i.e. ORDER BY distance
-- LIMIT n in the index, run in parallel workers where the server allows; see
-- nearest_chunks.v1.sql), never an O(n^2) scan:
--
-- * without reference: among the chunks of the same collection, excluding the record's own
--   chunks (outliers within the collection);
-- * with reference: among the chunks of the reference collection, which must be embedded with
--   the same active model (novelty against a trusted set). Anomalies that form a tight cluster
--   of their own (spam templates) hide from within-collection scores, not from these.
--
-- A chunk's score is the mean cosine distance to its k nearest neighbouring *records*, each at
-- the distance of its closest chunk; a record's score is the mean over its chunks (for
-- records of one chunk: the mean cosine distance to the k nearest other records). To find k
-- distinct records when neighbours have several chunks, a probe reads k x (average chunks per
-- record of the probed collection, rounded up, at most 4) chunks; when those hold fewer than
-- k records, the mean is over the records found.
--
-- rank: 1 = most anomalous (ties by external id); percentile: 100 * percent_rank() by score,
-- so the most anomalous record has 100 and "percentile >= 99" is the top 1 %.
--
-- Numbers from the catalogue (dimensions, ids) are spliced in with format('%s') so that the
-- vector expression and predicate match the partial HNSW index; k and the probe size are bound
-- parameters. The index knobs of the probed collection go through
-- embedplat.apply_search_knobs / restore_search_knobs (search.v2.sql): iterative scan on,
-- ef_search from embedplat.bulk_probe_ef_search (duplicates.v1.sql; at least the probe size),
-- transaction-local and put back on return.

CREATE OR REPLACE FUNCTION embedplat.anomaly_scores(
    collection text,
    k integer DEFAULT 10,
    reference text DEFAULT NULL
)
RETURNS TABLE (
    id text,            -- the record's external id
    score float8,       -- mean cosine distance to the k nearest records; higher = more anomalous
    rank bigint,        -- 1 = the most anomalous record
    percentile float8   -- 0..100: share of the other records scoring lower (100 = the highest)
)
LANGUAGE plpgsql
VOLATILE  -- it changes (transaction-local) settings
PARALLEL UNSAFE
AS $fn$
#variable_conflict use_column
DECLARE
    col_id integer;
    model_id integer;
    model_name text;
    dims integer;
    ref_id integer;
    ref_model_id integer;
    ref_model_name text;
    opts jsonb;
    chunks_per_record float8;
    probe_n integer;
    ef integer;
    saved text[];
    chunk_records bigint[];
    chunk_scores float8[];
BEGIN
    IF k IS NULL OR k < 1 OR k > 1000 THEN
        RAISE EXCEPTION 'embedplat.anomaly_scores: k must be between 1 and 1000, got %', k
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT t.collection_id, t.model_id, t.dimensions, t.model_name, t.index_options
      INTO col_id, model_id, dims, model_name, opts
      FROM embedplat.collection_target(collection, 'embedplat.anomaly_scores') t;

    IF reference IS NULL THEN
        ref_id := col_id;
    ELSE
        SELECT c.id, c.active_model_id, m.name, c.index_options
          INTO ref_id, ref_model_id, ref_model_name, opts
          FROM embedplat.collections c
          LEFT JOIN embedplat.embedding_models m ON m.id = c.active_model_id
         WHERE c.name = reference;
        IF ref_id IS NULL THEN
            RAISE EXCEPTION 'embedplat.anomaly_scores: no reference collection named %', quote_literal(reference)
                USING ERRCODE = 'undefined_object';
        END IF;
        IF ref_model_id IS NULL THEN
            RAISE EXCEPTION 'embedplat.anomaly_scores: reference collection % has no embeddings yet; sync it first',
                quote_literal(reference)
                USING ERRCODE = 'object_not_in_prerequisite_state';
        END IF;
        IF model_id IS NOT NULL AND ref_model_id <> model_id THEN
            RAISE EXCEPTION 'embedplat.anomaly_scores: collection % is embedded with %, but reference collection % with %; vectors of different models cannot be compared',
                quote_literal(collection), model_name, quote_literal(reference), ref_model_name
                USING ERRCODE = 'data_exception';
        END IF;
    END IF;
    IF model_id IS NULL THEN
        RETURN;  -- nothing embedded yet
    END IF;

    SELECT count(*)::float8 / nullif(count(DISTINCT ch.record_id), 0)
      INTO chunks_per_record
      FROM embedplat.chunks ch
     WHERE ch.collection_id = ref_id;
    probe_n := k * least(greatest(ceil(coalesce(chunks_per_record, 1))::integer, 1), 4);

    -- The probed (reference) collection's index knobs; ef_search raised to the probe size.
    ef := embedplat.bulk_probe_ef_search(opts, probe_n);
    saved := embedplat.apply_search_knobs(opts, ef, NULL, 'embedplat.anomaly_scores');

    -- One probe per chunk, as a statement of its own: a plain scan calling the parallel-safe
    -- probe function, which the server may split across parallel workers.
    EXECUTE format($q$
        SELECT coalesce(array_agg(e.record_id), '{}'),
               coalesce(array_agg(embedplat.nearest_records_mean_distance(
                   e.embedding::vector(%1$s), %4$s, %3$s, %1$s, e.record_id, $2, $1)), '{}')
        FROM embedplat.embeddings e
        WHERE e.collection_id = %2$s AND e.model_id = %3$s
    $q$, dims, col_id, model_id, ref_id) INTO chunk_records, chunk_scores USING k, probe_n;

    RETURN QUERY EXECUTE $q$
        WITH record_scores AS (
            SELECT cs.record_id, avg(cs.score)::float8 AS score
            FROM unnest($1::bigint[], $2::float8[]) AS cs(record_id, score)
            WHERE cs.score IS NOT NULL
            GROUP BY cs.record_id
        )
        SELECT r.external_id,
               rs.score,
               row_number() OVER (ORDER BY rs.score DESC, r.external_id COLLATE "C"),
               100 * percent_rank() OVER (ORDER BY rs.score)
        FROM record_scores rs
        JOIN embedplat.records r ON r.id = rs.record_id
        ORDER BY 3
    $q$ USING chunk_records, chunk_scores;

    PERFORM embedplat.restore_search_knobs(saved);
END
$fn$;

COMMENT ON FUNCTION embedplat.anomaly_scores(text, integer, text) IS
    'Anomaly score per record (mean cosine distance to its k nearest other records of the collection, or of the reference collection), with rank (1 = most anomalous) and percentile (100 = highest score). k-NN probes through the HNSW index.';
