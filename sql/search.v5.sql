-- Search, v5: search and hybrid_search take the identity of the model the query vector was
-- embedded with, and refuse a vector of another model than the collection's active one.
--
-- Until v4 only the query's dimension was checked. A client that embedded its query text just
-- before a model switch swapped the collection's active model would send a vector of the old
-- model; with the same dimension it was compared with the new model's vectors, silently. Both
-- functions gain two trailing arguments:
--   query_model        the name of the model the query vector was embedded with
--                      (embedding_models.name);
--   query_fingerprint  its fingerprint (embedding_models.fingerprint, a hex SHA-256): in
--                      full, or a prefix of at least 12 characters (the prefix that error
--                      messages show), compared exactly as stored.
-- Either may be given alone. When given and not the collection's active model, the call raises
-- 22000 (data_exception, as for a dimension mismatch) with a message naming both models. The
-- model is checked before the dimension, so a switch between models of different dimensions
-- also names both. Both NULL (the default): exactly v4's behaviour, and the four-argument form
-- search(collection, query, k, filter) of v1 works unchanged. Nothing embedded yet: nothing to
-- compare with, so no rows (search) or the text list only (hybrid_search), as before.
--
-- search is search.v2.sql's and hybrid_search is hybrid_search.v1.sql's, plus the check
-- (embedplat.check_query_model below, shared by both); every other function stays as
-- search.v2.sql to search.v4.sql and hybrid_search.v1.sql / v2 define it.

-- Refuse a query vector embedded with another model than the collection's active one
-- (model_id; NULL: nothing embedded, or no vector to compare, so only the arguments are
-- checked). query_model / query_fingerprint NULL: nothing to check.
CREATE OR REPLACE FUNCTION embedplat.check_query_model(
    collection text, model_id integer, query_model text, query_fingerprint text, caller text
)
RETURNS void
LANGUAGE plpgsql
STABLE
AS $fn$
DECLARE
    active_name text;
    active_fingerprint text;
BEGIN
    IF query_model IS NULL AND query_fingerprint IS NULL THEN
        RETURN;
    END IF;
    IF query_model IS NOT NULL AND btrim(query_model) = '' THEN
        RAISE EXCEPTION '%: query_model must be a model name or NULL, got an empty string', caller
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF query_fingerprint IS NOT NULL AND length(query_fingerprint) < 12 THEN
        RAISE EXCEPTION '%: query_fingerprint must be the model''s fingerprint or a prefix of at least 12 characters of it, got %',
            caller, quote_literal(query_fingerprint)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF model_id IS NULL THEN
        RETURN;
    END IF;
    SELECT m.name, m.fingerprint INTO active_name, active_fingerprint
      FROM embedplat.embedding_models m WHERE m.id = check_query_model.model_id;
    IF (query_model IS NOT NULL AND query_model <> active_name)
       OR (query_fingerprint IS NOT NULL AND NOT starts_with(active_fingerprint, query_fingerprint)) THEN
        RAISE EXCEPTION '%: the query vector was embedded with %, but collection % is embedded with % (fingerprint %); embed the query with that model',
            caller,
            CASE WHEN query_model IS NULL
                 THEN 'a model of fingerprint ' || left(query_fingerprint, 12)
                 WHEN query_fingerprint IS NULL THEN query_model
                 ELSE query_model || ' (fingerprint ' || left(query_fingerprint, 12) || ')' END,
            quote_literal(collection), active_name, left(active_fingerprint, 12)
            USING ERRCODE = 'data_exception';
    END IF;
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
    probes integer DEFAULT NULL,
    query_model text DEFAULT NULL,
    query_fingerprint text DEFAULT NULL
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
    -- The model before the dimension: a query of another model gets the message naming both.
    PERFORM embedplat.check_query_model(
        collection, target.model_id, query_model, query_fingerprint, 'embedplat.search');
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

COMMENT ON FUNCTION embedplat.search(text, vector, integer, jsonb, float8, boolean, integer, integer, text, text) IS
    'The k records (or chunks, per_record => false) of a collection nearest to a query vector, through the collection''s ANN index; filter in the embedplat filter language (docs/filters.md); query_model / query_fingerprint: the model the query was embedded with, refused unless it is the collection''s; see docs/sql.md.';

CREATE OR REPLACE FUNCTION embedplat.hybrid_search(
    collection text,
    query_text text,
    query vector,
    k integer DEFAULT 10,
    filter jsonb DEFAULT '{}'::jsonb,
    vector_weight float8 DEFAULT 1,
    text_weight float8 DEFAULT 1,
    rrf_k integer DEFAULT 60,
    ef_search integer DEFAULT NULL,
    probes integer DEFAULT NULL,
    query_model text DEFAULT NULL,
    query_fingerprint text DEFAULT NULL
)
RETURNS SETOF embedplat.hybrid_hit
LANGUAGE plpgsql
VOLATILE  -- it changes (transaction-local) settings
PARALLEL UNSAFE
AS $fn$
DECLARE
    target record;
    saved text[];
    depth integer;
    tsq tsquery;
    compiled record;
    vhits embedplat.search_hit[] := ARRAY[]::embedplat.search_hit[];
    t_records bigint[] := ARRAY[]::bigint[];
    t_chunks bigint[] := ARRAY[]::bigint[];
    t_scores real[] := ARRAY[]::real[];
    lexemes tsquery[];
    idfs float8[];
    cand text[];
    token text;
    df integer;
    n_chunks bigint;
    df_cap integer;
    cand_cap integer;
    cand_q tsquery;
    rarest text;
    rarest_df integer;
BEGIN
    IF k IS NULL OR k < 1 OR k > 10000 THEN
        RAISE EXCEPTION 'embedplat.hybrid_search: k must be between 1 and 10000, got %', k
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF vector_weight IS NULL OR text_weight IS NULL OR vector_weight < 0 OR text_weight < 0
       OR vector_weight = 'NaN' OR text_weight = 'NaN' OR vector_weight + text_weight = 0 THEN
        RAISE EXCEPTION 'embedplat.hybrid_search: vector_weight and text_weight must be at least 0 and not both 0, got % and %', vector_weight, text_weight
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF rrf_k IS NULL OR rrf_k < 0 THEN
        RAISE EXCEPTION 'embedplat.hybrid_search: rrf_k must be at least 0, got %', rrf_k
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF query IS NULL AND query_text IS NULL THEN
        RAISE EXCEPTION 'embedplat.hybrid_search: give a query text, a query vector, or both'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    filter := coalesce(filter, '{}'::jsonb);
    PERFORM embedplat.metadata_matches('{}'::jsonb, filter);  -- validates every clause
    SELECT * INTO target FROM embedplat.collection_target(collection, 'embedplat.hybrid_search');
    -- The model is compared only when the query vector is (the vector list is on), and before
    -- its dimension; the arguments themselves are checked in every case.
    PERFORM embedplat.check_query_model(
        collection,
        CASE WHEN query IS NOT NULL AND vector_weight > 0 THEN target.model_id END,
        query_model, query_fingerprint, 'embedplat.hybrid_search');
    depth := greatest(4 * k, 60);

    IF query IS NOT NULL AND vector_weight > 0 AND target.model_id IS NOT NULL THEN
        PERFORM embedplat.check_query_dimensions(
            collection, query, target.dimensions, target.model_name, 'embedplat.hybrid_search');
        saved := embedplat.apply_search_knobs(
            target.index_options, ef_search, probes, 'embedplat.hybrid_search');
        vhits := ARRAY(
            SELECT h FROM embedplat.nearest_hits(
                target.collection_id, target.model_id, target.dimensions, query, depth,
                filter, NULL, true, 0) AS h);
        PERFORM embedplat.restore_search_knobs(saved);
    END IF;

    tsq := embedplat.text_query(query_text);
    IF tsq IS NOT NULL AND text_weight > 0 THEN
        SELECT * INTO compiled FROM embedplat.compile_filter(filter);
    END IF;
    IF tsq IS NOT NULL AND text_weight > 0 AND embedplat.text_query_is_plain(query_text) THEN
        -- Plain words: BM25 over the query's distinct lexemes (see the header).
        SELECT count(*) INTO n_chunks FROM embedplat.chunks ch
         WHERE ch.collection_id = target.collection_id;
        df_cap := least(greatest(n_chunks / 4, 1000), 20000);
        cand_cap := least(greatest(n_chunks / 20, 500), 5000);
        lexemes := ARRAY[]::tsquery[];
        idfs := ARRAY[]::float8[];
        cand := ARRAY[]::text[];
        -- The tsquery's text form quotes every lexeme ('...', with ' and \ escaped): each quoted
        -- token reads back as a one-lexeme tsquery.
        FOR token IN
            SELECT DISTINCT m[1]
            FROM regexp_matches(tsq::text, '(''(?:[^''\\]|''''|\\.)*'')', 'g') AS m
            ORDER BY 1
        LOOP
            SELECT count(*) INTO df FROM (
                SELECT 1 FROM embedplat.chunks ch
                 WHERE ch.collection_id = target.collection_id
                   AND ch.content_tsv @@ token::tsquery
                 LIMIT df_cap) s;
            CONTINUE WHEN df = 0;
            lexemes := lexemes || token::tsquery;
            idfs := idfs || ln(1 + (n_chunks - df + 0.5) / (df + 0.5))::float8;
            IF df < cand_cap THEN
                cand := cand || token;
            END IF;
            IF rarest IS NULL OR df < rarest_df THEN
                rarest := token;
                rarest_df := df;
            END IF;
        END LOOP;
        IF cardinality(cand) = 0 THEN
            -- Only very common words: the rarest one finds the candidates.
            cand_q := rarest::tsquery;
        ELSE
            cand_q := array_to_string(cand, ' | ')::tsquery;
        END IF;
        IF cardinality(lexemes) > 0 THEN
            EXECUTE format($q$
                SELECT coalesce(array_agg(x.record_id ORDER BY x.score DESC, x.record_id), '{}'),
                       coalesce(array_agg(x.chunk_id ORDER BY x.score DESC, x.record_id), '{}'),
                       coalesce(array_agg(x.score ORDER BY x.score DESC, x.record_id), '{}')
                FROM (
                    SELECT b.record_id, b.chunk_id, b.score
                    FROM (
                        SELECT DISTINCT ON (s.record_id) s.record_id, s.chunk_id, s.score
                        FROM (
                            SELECT c.record_id, c.chunk_id, c.ordinal,
                                   sum(t.idf * u.tf * 2.2
                                       / (u.tf + 1.2 * (0.25 + 0.75 * c.dl / c.avgdl)))::real AS score
                            FROM (
                                SELECT ch.record_id, ch.id AS chunk_id, ch.ordinal, ch.content_tsv,
                                       length(ch.content_tsv)::float8 AS dl,
                                       avg(length(ch.content_tsv)) OVER ()::float8 AS avgdl
                                FROM embedplat.chunks ch
                                JOIN embedplat.records r0 ON r0.id = ch.record_id
                                WHERE ch.collection_id = $3 AND ch.content_tsv @@ $1 AND %s
                            ) c
                            CROSS JOIN unnest($5::tsquery[], $6::float8[]) AS t(q, idf)
                            CROSS JOIN LATERAL (
                                SELECT greatest(1, round(
                                    1 / (1.6449340668 * (1 - ts_rank('{1,1,1,1}', c.content_tsv, t.q)))
                                    - 0.5)) AS tf) u
                            WHERE c.content_tsv @@ t.q
                            GROUP BY c.record_id, c.chunk_id, c.ordinal
                        ) s
                        ORDER BY s.record_id, s.score DESC, s.ordinal
                    ) b
                    ORDER BY b.score DESC, b.record_id
                    LIMIT $4
                ) x
            $q$, compiled.predicate)
            INTO t_records, t_chunks, t_scores
            -- $5/$6: the lexemes and their IDFs; $7/$8: the compiled filter's keys and values.
            USING cand_q, filter, target.collection_id, depth, lexemes, idfs,
                  compiled.keys, compiled.vals;
        END IF;
    ELSIF tsq IS NOT NULL AND text_weight > 0 THEN
        EXECUTE format($q$
            SELECT coalesce(array_agg(x.record_id ORDER BY x.score DESC, x.record_id), '{}'),
                   coalesce(array_agg(x.chunk_id ORDER BY x.score DESC, x.record_id), '{}'),
                   coalesce(array_agg(x.score ORDER BY x.score DESC, x.record_id), '{}')
            FROM (
                SELECT b.record_id, b.chunk_id, b.score
                FROM (
                    SELECT DISTINCT ON (ch.record_id)
                           ch.record_id, ch.id AS chunk_id, ts_rank_cd(ch.content_tsv, $1) AS score
                    FROM embedplat.chunks ch
                    JOIN embedplat.records r0 ON r0.id = ch.record_id
                    WHERE ch.collection_id = $3 AND ch.content_tsv @@ $1 AND %s
                    ORDER BY ch.record_id, score DESC, ch.ordinal
                ) b
                ORDER BY b.score DESC, b.record_id
                LIMIT $4
            ) x
        $q$, compiled.predicate)
        INTO t_records, t_chunks, t_scores
        -- $5, $6 unused; $7/$8: the compiled filter's keys and values.
        USING tsq, filter, target.collection_id, depth, NULL::integer, NULL::integer,
              compiled.keys, compiled.vals;
    END IF;

    RETURN QUERY
    WITH v AS (
        SELECT h.id, h.chunk, h.similarity, h.metadata, h.chunk_ordinal, h.n::integer AS rnk
        FROM unnest(vhits) WITH ORDINALITY
             AS h(id, chunk, similarity, metadata, chunk_ordinal, char_start, char_end, n)
        WHERE vector_weight > 0
    ),
    t AS (
        SELECT r.external_id AS id, ch.content AS chunk, x.score, r.metadata,
               ch.ordinal AS chunk_ordinal, x.n::integer AS rnk
        FROM unnest(t_records, t_chunks, t_scores) WITH ORDINALITY AS x(record_id, chunk_id, score, n)
        JOIN embedplat.records r ON r.id = x.record_id
        JOIN embedplat.chunks ch ON ch.id = x.chunk_id
    ),
    fused AS (
        SELECT coalesce(v.id, t.id) AS id,
               coalesce(v.chunk, t.chunk) AS chunk,
               coalesce(vector_weight / (rrf_k + v.rnk), 0)
                 + coalesce(text_weight / (rrf_k + t.rnk), 0) AS fused_score,
               v.similarity,
               t.score AS text_score,
               v.rnk AS vector_rank,
               t.rnk AS text_rank,
               coalesce(v.metadata, t.metadata) AS metadata,
               coalesce(v.chunk_ordinal, t.chunk_ordinal) AS chunk_ordinal
        FROM v FULL JOIN t ON t.id = v.id
    )
    SELECT f.id, f.chunk, f.fused_score::float8, f.similarity, f.text_score,
           f.vector_rank, f.text_rank, f.metadata, f.chunk_ordinal
    FROM fused f
    ORDER BY f.fused_score DESC, f.vector_rank NULLS LAST, f.text_rank NULLS LAST, f.id
    LIMIT k;
END
$fn$;

COMMENT ON FUNCTION embedplat.hybrid_search(text, text, vector, integer, jsonb, float8, float8, integer, integer, integer, text, text) IS
    'The k records of a collection best matching a query text and vector: full-text rank (chunks.content_tsv) and vector rank fused by reciprocal rank fusion; query_model / query_fingerprint as in embedplat.search; see docs/sql.md.';
