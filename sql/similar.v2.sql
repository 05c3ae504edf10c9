-- embedplat.similar, version 2: as similar.v1.sql (see its header), and a record whose
-- vectors have no direction (all zeros, or chunk vectors that average to zero) is refused
-- with a clear error instead of returning every neighbour with similarity NaN, as
-- embedplat.check_query_dimensions (search.v3.sql) refuses a zero query vector.

CREATE OR REPLACE FUNCTION embedplat.similar(
    collection text,
    external_id text,
    k integer DEFAULT 10,
    filter jsonb DEFAULT '{}'::jsonb,
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
    rec_id bigint;
    centroid vector;
    -- The parameter under another name: "similar" is a keyword, so similar.external_id cannot
    -- qualify it, and a bare external_id would be ambiguous with the column.
    wanted text := $2;
BEGIN
    IF k IS NULL OR k < 1 OR k > 10000 THEN
        RAISE EXCEPTION 'embedplat.similar: k must be between 1 and 10000, got %', k
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    filter := coalesce(filter, '{}'::jsonb);
    PERFORM embedplat.metadata_matches('{}'::jsonb, filter);  -- validates every clause
    SELECT * INTO target FROM embedplat.collection_target(collection, 'embedplat.similar');
    SELECT r.id INTO rec_id
      FROM embedplat.records r
     WHERE r.collection_id = target.collection_id AND r.external_id = wanted;
    IF rec_id IS NULL THEN
        RAISE EXCEPTION 'embedplat.similar: collection % has no record with id %', quote_literal(collection), quote_literal(wanted)
            USING ERRCODE = 'no_data_found';
    END IF;
    IF target.model_id IS NOT NULL THEN
        SELECT avg(e.embedding) INTO centroid
          FROM embedplat.embeddings e
         WHERE e.record_id = rec_id AND e.model_id = target.model_id;
    END IF;
    IF centroid IS NULL THEN
        RAISE EXCEPTION 'embedplat.similar: record % of collection % has no vectors yet; run `embedplat sync`', quote_literal(wanted), quote_literal(collection)
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF (centroid <=> centroid) = 'NaN'::float8 THEN
        RAISE EXCEPTION 'embedplat.similar: the vectors of record % of collection % average to zero: they have no direction, so no cosine similarity', quote_literal(wanted), quote_literal(collection)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    saved := embedplat.apply_search_knobs(target.index_options, ef_search, probes, 'embedplat.similar');
    RETURN QUERY SELECT * FROM embedplat.nearest_hits(
        target.collection_id, target.model_id, target.dimensions, centroid, k,
        filter, NULL, true, rec_id);
    PERFORM embedplat.restore_search_knobs(saved);
END
$fn$;

COMMENT ON FUNCTION embedplat.similar(text, text, integer, jsonb, integer, integer) IS
    'The k records nearest to an existing record (the mean of its chunk vectors), excluding itself; see docs/sql.md.';
