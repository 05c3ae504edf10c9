-- embedplat.hybrid_search: full-text search over chunk text fused with vector search by
-- reciprocal rank fusion (RRF).
--
-- Two ranked lists of records, each with the record's best chunk:
--   * vector: embedplat.nearest_hits (the ANN index, like embedplat.search);
--   * text:   chunks whose stored tsvector (chunks.content_tsv, GIN-indexed) matches the query,
--             ranked by BM25 for a query of plain words, by ts_rank_cd otherwise (below).
-- Each record scores  vector_weight / (rrf_k + vector_rank) + text_weight / (rrf_k + text_rank)
-- (a list the record is absent from adds nothing); the k best are returned. Both lists are
-- max(4k, 60) deep.
--
-- The text query follows websearch_to_tsquery ('english'): "quoted phrases", -exclusions and
-- OR work as in a web search engine; such a query's matches are ranked by ts_rank_cd. A query
-- of plain words (none of those operators), such as a natural-language question, is ranked by
-- BM25 (k1 = 1.2, b = 0.75) over its distinct lexemes, every statistic taken from the
-- collection's chunks at query time (no extra tables):
--   * N = the collection's chunk count; df(t) = the chunks containing lexeme t, counted through
--     the GIN index but at most df_cap = clamp(N/4, 1000, 20000) of them, so a very common
--     word stops counting early (its df is then taken as df_cap: a small IDF);
--     idf(t) = ln(1 + (N - df + 0.5) / (df + 0.5));
--   * candidates: chunks containing ANY informative lexeme (df < cand_cap =
--     clamp(N/20, 500, 5000)); common words add to a candidate's score but do not make
--     candidates (when every word is common, the rarest one does);
--   * score(chunk) = sum over the query lexemes it contains of
--     idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avgdl)), tf = the lexeme's
--     occurrences in the chunk (read back from ts_rank with unit weights, which for one lexeme
--     is sum(1/i^2, i = 1..tf) / (pi^2/6)), dl = the chunk's distinct lexemes, avgdl = their
--     mean over the candidates.
-- Requiring every word of a question rarely matches anything, which would reduce hybrid search
-- to vector search; weighting by IDF keeps words such as "cell" or "patients" from drowning the
-- rare words that identify the answer.
--
-- As in embedplat.search, only numbers from the catalogue are spliced into SQL text; the query,
-- filter and limits are bound parameters, and the index knobs are restored before returning.
-- The lexemes are read back from the tsquery's own text form (which quotes each one), never
-- from the user's text.

CREATE TYPE embedplat.hybrid_hit AS (
    id text,               -- the record's external id
    chunk text,            -- the record's best chunk (by vector similarity, else by text rank)
    score float8,          -- the fused RRF score, higher = better
    similarity float8,     -- cosine similarity of the best vector chunk (NULL: not in the vector list)
    text_score float4,     -- BM25 (plain words) or ts_rank_cd score of the best text chunk (NULL: not in the text list)
    vector_rank integer,   -- 1-based rank in the vector list (NULL: absent)
    text_rank integer,     -- 1-based rank in the full-text list (NULL: absent)
    metadata jsonb,        -- the record's metadata
    chunk_ordinal integer  -- position of the chunk in its record (0 = first)
);

-- The tsquery hybrid_search matches for a query text (NULL when it has no searchable words):
-- for plain words, the OR of their lexemes, of which hybrid_search keeps the informative ones.
-- Whether a query text is plain words (no "phrase", -exclusion or OR): hybrid_search ranks
-- those by BM25.
CREATE OR REPLACE FUNCTION embedplat.text_query_is_plain(query_text text)
RETURNS boolean
LANGUAGE sql
IMMUTABLE PARALLEL SAFE
AS $fn$
    SELECT query_text !~* '("|(^|\s)-\S|(^|\s)or(\s|$))'
$fn$;

CREATE OR REPLACE FUNCTION embedplat.text_query(query_text text)
RETURNS tsquery
LANGUAGE plpgsql
IMMUTABLE PARALLEL SAFE
AS $fn$
DECLARE
    q tsquery;
BEGIN
    IF query_text IS NULL THEN
        RETURN NULL;
    END IF;
    q := websearch_to_tsquery('english', query_text);
    IF numnode(q) = 0 THEN
        RETURN NULL;  -- empty, or only stop words
    END IF;
    IF embedplat.text_query_is_plain(query_text) THEN
        -- Plain words: any of them. The tsquery's own text form quotes every lexeme, so
        -- re-reading it after swapping the AND operators is safe.
        q := replace(q::text, ' & ', ' | ')::tsquery;
    END IF;
    RETURN q;
END
$fn$;

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
    probes integer DEFAULT NULL
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

COMMENT ON FUNCTION embedplat.hybrid_search(text, text, vector, integer, jsonb, float8, float8, integer, integer, integer) IS
    'The k records of a collection best matching a query text and vector: full-text rank (chunks.content_tsv) and vector rank fused by reciprocal rank fusion; see docs/sql.md.';
