-- Near-duplicate detection: embedplat.near_duplicate_record_pairs, embedplat.near_duplicates,
-- embedplat.duplicate_groups.
--
-- Version 2: `threshold` is double precision (v1: real). Drivers send floating-point
-- parameters as double precision (psycopg, SQLAlchemy), which found no v1 function
-- ("near_duplicates(character varying, double precision, integer) does not exist"); a real
-- argument still works (real converts implicitly to double precision). near_duplicates
-- checks its arguments also on an empty collection (v1 could skip the check there).
-- Otherwise as v1.
--
-- Exact duplicates (records of the collection with the same database-computed content_hash)
-- are found without vectors, by grouping on the hash, and reported with similarity 1.
--
-- Near-duplicates come from one k-NN probe per embedded chunk through the collection's partial
-- HNSW index (a CROSS JOIN LATERAL embedplat.nearest_chunks(...), i.e. ORDER BY distance
-- LIMIT k in the index, see nearest_chunks.v1.sql), never from an O(n^2) scan: each chunk
-- looks up its k nearest chunks of *other* records; a record pair becomes a
-- candidate when one of those chunk pairs reaches the threshold. The record similarity is then
--
--   sim(A, B) = least( mean over chunks a of A of max over chunks b of B of cos(a, b),
--                      mean over chunks b of B of max over chunks a of A of cos(a, b) )
--
-- (a symmetric "every part of each has a close counterpart in the other" score). For records
-- of one chunk, the usual case, that is simply the cosine similarity of their two vectors.
-- Two long documents that merely share a boilerplate paragraph score low; a document that
-- contains another one plus much more is not its duplicate. Every candidate reaching the
-- threshold at chunk level is re-scored exactly over all its chunk pairs.
--
-- Records with identical content share their vectors, so probes and scores are computed per
-- distinct content and expanded to every record carrying it, and a probe leaves out its own
-- content's copies: a crowd of exact copies can neither fill its own probes nor, having one
-- probe per content, outnumber the others. (Copies of *another* content still take one place
-- each among a probe's k neighbours; k bounds how many neighbours a chunk looks at.)
--
-- As in embedplat.search, the vector expression and the predicate repeat the partial index's
-- definition (embedding::vector(N), collection_id = C AND model_id = M) with numbers read from
-- the catalogue spliced in by format('%s'); user values (threshold, k) are bound parameters.
-- The index knobs go through embedplat.apply_search_knobs / restore_search_knobs (see
-- search.v2.sql): iterative scan on, ef_search from embedplat.bulk_probe_ef_search (at least
-- k), all transaction-local (set_config(..., true)) and put back before the function returns.
--
-- The default threshold 0.7 is calibrated for all-MiniLM-L6-v2: best F1 for SICK pairs of
-- relatedness >= 4 (F1 0.81 on MRPC paraphrases, whose best is 0.82 at 0.60); see
-- benchmarks/calibrate_duplicates.py and docs/sql.md. Other models need their own.

CREATE OR REPLACE FUNCTION embedplat.near_duplicate_record_pairs(
    collection text,
    threshold float8 DEFAULT 0.7,
    k integer DEFAULT 10
)
RETURNS TABLE (
    record_a bigint,    -- embedplat.records.id of one record (record_a < record_b)
    record_b bigint,    -- embedplat.records.id of the other
    similarity float8   -- record similarity (see above), 1 for identical content
)
LANGUAGE plpgsql
VOLATILE  -- it changes (transaction-local) settings
PARALLEL UNSAFE
AS $fn$
#variable_conflict use_column
DECLARE
    col_id integer;
    model_id integer;
    dims integer;
    model_name text;
    opts jsonb;
    ef integer;
    saved text[];
    hit_a bigint[];
    hit_b bigint[];
    hit_sim float8[];
BEGIN
    IF k IS NULL OR k < 1 OR k > 1000 THEN
        RAISE EXCEPTION 'embedplat.near_duplicates: k must be between 1 and 1000, got %', k
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF threshold IS NULL OR threshold = 'NaN'::float8 OR threshold < -1 OR threshold > 1 THEN
        RAISE EXCEPTION 'embedplat.near_duplicates: threshold must be a cosine similarity between -1 and 1, got %', threshold
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT t.collection_id, t.model_id, t.dimensions, t.model_name, t.index_options
      INTO col_id, model_id, dims, model_name, opts
      FROM embedplat.collection_target(collection, 'embedplat.near_duplicates') t;

    IF model_id IS NULL THEN
        -- Nothing embedded yet: identical content is all that can be found.
        RETURN QUERY
            SELECT g.ids[i.i], g.ids[j.j], 1.0::float8
            FROM (
                SELECT array_agg(r.id ORDER BY r.id) AS ids
                FROM embedplat.records r
                WHERE r.collection_id = col_id
                GROUP BY r.content_hash
                HAVING count(*) > 1
            ) g
            CROSS JOIN LATERAL generate_subscripts(g.ids, 1) AS i(i)
            CROSS JOIN LATERAL generate_subscripts(g.ids, 1) AS j(j)
            WHERE i.i < j.j;
        RETURN;
    END IF;

    ef := embedplat.bulk_probe_ef_search(opts, k);
    saved := embedplat.apply_search_knobs(opts, ef, NULL, 'embedplat.near_duplicates');

    -- One k-NN probe per chunk (of one record per distinct content) through the index, as a
    -- statement of its own: a plain scan calling the parallel-safe probe function, which the
    -- server may split across parallel workers (inside the big statement below it could not).
    -- The probe leaves out the probing content's other copies (g.ids), so they cannot fill its
    -- k places.
    EXECUTE format($q$
        SELECT coalesce(array_agg(e.record_id), '{}'),
               coalesce(array_agg(n.record_id), '{}'),
               coalesce(array_agg(1 - n.distance), '{}')
        FROM (SELECT min(r.id) AS rep, array_agg(r.id) AS ids
              FROM embedplat.records r
              WHERE r.collection_id = %2$s
              GROUP BY r.content_hash) g
        JOIN embedplat.embeddings e
          ON e.record_id = g.rep AND e.collection_id = %2$s AND e.model_id = %3$s
        CROSS JOIN LATERAL embedplat.nearest_chunks(
            e.embedding::vector(%1$s), %2$s, %3$s, %1$s, e.record_id, $2,
            CASE WHEN cardinality(g.ids) > 1 THEN g.ids END) n
        WHERE 1 - n.distance >= $1
    $q$, dims, col_id, model_id) INTO hit_a, hit_b, hit_sim USING threshold, k;

    RETURN QUERY EXECUTE format($q$
        WITH recs AS (
            SELECT r.id, r.content_hash
            FROM embedplat.records r
            WHERE r.collection_id = %2$s
        ),
        -- Exact duplicates: same content hash, no vectors needed.
        exact AS (
            SELECT g.ids[i.i] AS ra, g.ids[j.j] AS rb
            FROM (
                SELECT array_agg(recs.id ORDER BY recs.id) AS ids
                FROM recs
                GROUP BY recs.content_hash
                HAVING count(*) > 1
            ) g
            CROSS JOIN LATERAL generate_subscripts(g.ids, 1) AS i(i)
            CROSS JOIN LATERAL generate_subscripts(g.ids, 1) AS j(j)
            WHERE i.i < j.j
        ),
        -- The probes' hits above the threshold (chunk level).
        probes AS (
            SELECT p.ra, p.rb, p.sim FROM unnest($2::bigint[], $3::bigint[], $4::float8[]) AS p(ra, rb, sim)
        ),
        -- Candidate pairs of distinct contents, with the best chunk similarity and one record
        -- of each content to score.
        candidates AS MATERIALIZED (
            SELECT CASE WHEN x.content_hash < y.content_hash THEN x.content_hash ELSE y.content_hash END AS ha,
                   CASE WHEN x.content_hash < y.content_hash THEN y.content_hash ELSE x.content_hash END AS hb,
                   min(CASE WHEN x.content_hash < y.content_hash THEN p.ra ELSE p.rb END) AS rep_a,
                   min(CASE WHEN x.content_hash < y.content_hash THEN p.rb ELSE p.ra END) AS rep_b,
                   max(p.sim) AS chunk_sim
            FROM probes p
            JOIN recs x ON x.id = p.ra
            JOIN recs y ON y.id = p.rb
            WHERE x.content_hash <> y.content_hash
            GROUP BY 1, 2
        ),
        multi AS MATERIALIZED (
            SELECT ch.record_id
            FROM embedplat.chunks ch
            WHERE ch.collection_id = %2$s
            GROUP BY ch.record_id
            HAVING count(*) > 1
        ),
        scored AS (
            -- One chunk each: the record similarity is the chunk similarity.
            SELECT c.ha, c.hb, c.chunk_sim AS sim
            FROM candidates c
            WHERE NOT EXISTS (SELECT 1 FROM multi WHERE multi.record_id IN (c.rep_a, c.rep_b))
            UNION ALL
            -- Several chunks: exact score over all chunk pairs of the two records.
            SELECT c.ha, c.hb, s.sim
            FROM candidates c
            CROSS JOIN LATERAL (
                WITH cp AS (
                    SELECT ea.chunk_id AS ca, eb.chunk_id AS cb,
                           1 - ((ea.embedding::vector(%1$s)) <=> (eb.embedding::vector(%1$s))) AS sim
                    FROM embedplat.chunks xa
                    JOIN embedplat.embeddings ea ON ea.chunk_id = xa.id AND ea.model_id = %3$s
                    CROSS JOIN embedplat.chunks xb
                    JOIN embedplat.embeddings eb ON eb.chunk_id = xb.id AND eb.model_id = %3$s
                    WHERE xa.record_id = c.rep_a AND xb.record_id = c.rep_b
                )
                SELECT least(
                    (SELECT avg(m.best) FROM (SELECT max(cp.sim) AS best FROM cp GROUP BY cp.ca) m),
                    (SELECT avg(m.best) FROM (SELECT max(cp.sim) AS best FROM cp GROUP BY cp.cb) m)
                ) AS sim
            ) s
            WHERE EXISTS (SELECT 1 FROM multi WHERE multi.record_id IN (c.rep_a, c.rep_b))
        ),
        near AS (
            SELECT ra.id AS ra, rb.id AS rb, s.sim
            FROM scored s
            JOIN recs ra ON ra.content_hash = s.ha
            JOIN recs rb ON rb.content_hash = s.hb
            WHERE s.sim >= $1
        )
        SELECT least(near.ra, near.rb), greatest(near.ra, near.rb), near.sim::float8 FROM near
        UNION ALL
        SELECT exact.ra, exact.rb, 1.0::float8 FROM exact
    $q$, dims, col_id, model_id) USING threshold, hit_a, hit_b, hit_sim;

    PERFORM embedplat.restore_search_knobs(saved);
END
$fn$;

COMMENT ON FUNCTION embedplat.near_duplicate_record_pairs(text, float8, integer) IS
    'Near-duplicate record pairs of a collection as embedplat.records ids (record_a < record_b), similarity >= threshold; exact duplicates (same content_hash) with similarity 1. One k-NN probe per chunk through the HNSW index.';


CREATE OR REPLACE FUNCTION embedplat.near_duplicates(
    collection text,
    threshold float8 DEFAULT 0.7,
    k integer DEFAULT 10
)
RETURNS TABLE (
    a text,            -- external id of one record (a < b, compared byte-wise: COLLATE "C")
    b text,            -- external id of the other record
    similarity float8  -- record similarity, >= threshold; 1 for identical content
)
LANGUAGE sql
VOLATILE
PARALLEL UNSAFE
AS $fn$
    SELECT o.a, o.b, o.similarity
    FROM (
        SELECT CASE WHEN x.external_id COLLATE "C" < y.external_id COLLATE "C"
                    THEN x.external_id ELSE y.external_id END AS a,
               CASE WHEN x.external_id COLLATE "C" < y.external_id COLLATE "C"
                    THEN y.external_id ELSE x.external_id END AS b,
               p.similarity
        FROM embedplat.near_duplicate_record_pairs(collection, threshold, k) p
        -- LATERAL + OFFSET 0: the pairs are always the outer side, so the function runs (and
        -- checks its arguments) even where a hash join over no records would skip it.
        CROSS JOIN LATERAL (SELECT r.external_id FROM embedplat.records r
                            WHERE r.id = p.record_a OFFSET 0) x
        CROSS JOIN LATERAL (SELECT r.external_id FROM embedplat.records r
                            WHERE r.id = p.record_b OFFSET 0) y
    ) o
    ORDER BY o.similarity DESC, o.a COLLATE "C", o.b COLLATE "C"
$fn$;

COMMENT ON FUNCTION embedplat.near_duplicates(text, float8, integer) IS
    'Pairs (a, b, similarity) of records of a collection (external ids, a < b) whose similarity reaches threshold (default calibrated for all-MiniLM-L6-v2); exact duplicates have similarity 1. One k-NN probe per chunk through the HNSW index.';


CREATE OR REPLACE FUNCTION embedplat.duplicate_groups(
    collection text,
    threshold float8 DEFAULT 0.7,
    k integer DEFAULT 10
)
RETURNS TABLE (
    group_id bigint,  -- 1, 2, ...: largest group first (ties: by the keeper's external id)
    id text,          -- a record's external id
    keeper boolean    -- true for the one record to keep: the oldest (created_at), ties by id
)
LANGUAGE plpgsql
VOLATILE
PARALLEL UNSAFE
AS $fn$
#variable_conflict use_column
DECLARE
    col_id integer;
    node_ids bigint[];   -- record id of each node 1..n
    edge_a integer[];    -- edges as node numbers
    edge_b integer[];
    parent integer[];    -- union-find forest
    n integer;
    i integer;
    ra integer;
    rb integer;
BEGIN
    SELECT t.collection_id INTO col_id
      FROM embedplat.collection_target(collection, 'embedplat.duplicate_groups') t;

    -- Number the records that appear in a pair 1..n, and the pairs as edges between them.
    WITH p AS MATERIALIZED (
        SELECT q.record_a, q.record_b
        FROM embedplat.near_duplicate_record_pairs(collection, threshold, k) q
    ),
    nodes AS MATERIALIZED (
        SELECT s.rid, row_number() OVER (ORDER BY s.rid)::integer AS ix
        FROM (SELECT p.record_a AS rid FROM p UNION SELECT p.record_b FROM p) s
    )
    SELECT (SELECT array_agg(nodes.rid ORDER BY nodes.ix) FROM nodes),
           array_agg(na.ix), array_agg(nb.ix)
      INTO node_ids, edge_a, edge_b
      FROM p
      JOIN nodes na ON na.rid = p.record_a
      JOIN nodes nb ON nb.rid = p.record_b;

    n := coalesce(cardinality(node_ids), 0);
    IF n = 0 THEN
        RETURN;
    END IF;

    -- Connected components by union-find (path halving, union towards the smaller root):
    -- one pass over the edges, no recursion depth to worry about.
    parent := array(SELECT g FROM generate_series(1, n) g);
    FOR i IN 1 .. cardinality(edge_a) LOOP
        ra := edge_a[i];
        WHILE parent[ra] <> ra LOOP
            parent[ra] := parent[parent[ra]];
            ra := parent[ra];
        END LOOP;
        rb := edge_b[i];
        WHILE parent[rb] <> rb LOOP
            parent[rb] := parent[parent[rb]];
            rb := parent[rb];
        END LOOP;
        IF ra < rb THEN
            parent[rb] := ra;
        ELSIF rb < ra THEN
            parent[ra] := rb;
        END IF;
    END LOOP;
    FOR i IN 1 .. n LOOP
        ra := i;
        WHILE parent[ra] <> ra LOOP
            ra := parent[ra];
        END LOOP;
        parent[i] := ra;
    END LOOP;

    RETURN QUERY
        WITH members AS (
            SELECT u.root, r.external_id, r.created_at,
                   row_number() OVER (PARTITION BY u.root
                                      ORDER BY r.created_at, r.external_id COLLATE "C") AS pos,
                   count(*) OVER (PARTITION BY u.root) AS size
            FROM unnest(node_ids, parent) AS u(rid, root)
            JOIN embedplat.records r ON r.id = u.rid
        ),
        groups AS (
            SELECT m.root,
                   row_number() OVER (ORDER BY m.size DESC, m.external_id COLLATE "C") AS gid
            FROM members m
            WHERE m.pos = 1
        )
        SELECT g.gid, m.external_id, m.pos = 1
        FROM members m
        JOIN groups g ON g.root = m.root
        ORDER BY g.gid, m.pos;
END
$fn$;

COMMENT ON FUNCTION embedplat.duplicate_groups(text, float8, integer) IS
    'Groups of near-duplicate records (connected components of embedplat.near_duplicates pairs): group_id (largest first), the record''s external id, and keeper = the oldest record of the group (created_at, ties by external id).';
