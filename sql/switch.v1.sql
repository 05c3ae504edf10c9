-- The model switch: a collection moves from its active model to another one with no downtime
-- (docs/models.md, "Switching a collection's model").
--
--   embedplat.model_switch(collection, model, keep_old, model_id)   start (or resume) a switch
--   embedplat.model_switch_cancel(collection)                        abandon it
--   embedplat.model_switch_complete(collection)                      the swap, once complete
--   embedplat.purge_retired_vectors(collection_id, batch)            delete retired vectors
--   embedplat.model_switches                                         progress, one row a switch
--
-- While a switch runs, collections.switch_model_name names the target and backfill_model_id is
-- its embedding_models row (bound by the first process that loads the target's files, or given
-- by the caller who loaded them). Every chunk needs a vector of the target: the queue holds a
-- second row per chunk for that (embedding_queue.for_switch = true), next to the active model's
-- row (for_switch = false) of a chunk whose text changed. The search functions read only
-- active_model_id, so they never see a target vector before the swap.
--
-- The swap (model_switch_complete) locks the collection row FOR UPDATE. Every transaction that
-- writes chunks or vectors of the collection holds the row FOR KEY SHARE (the foreign keys of
-- chunks and embeddings take it; the sync engine takes it first when it stores vectors), so the
-- swap waits for those in flight and blocks new ones until it commits, and the completeness
-- check it then runs sees every chunk there is. Searches take no row lock: they never wait.
--
-- The vectors of the model that stops being active are not deleted by the swap: a search that
-- read the collection's model just before it runs its ANN scan in a later statement. They are
-- recorded in embedplat.retired_models and deleted once retire_grace() has passed.

-- How long retired vectors stay after the swap: longer than any search takes.
CREATE OR REPLACE FUNCTION embedplat.retire_grace()
RETURNS interval
LANGUAGE sql
IMMUTABLE PARALLEL SAFE
RETURN interval '15 seconds';

COMMENT ON FUNCTION embedplat.retire_grace() IS
    'How long the vectors of a model retired by a switch stay before embedplat.purge_retired_vectors deletes them.';

-- Whether the ANN index of (collection, model) exists and is valid. The name is
-- embedplat.indexes.ann_index_name's (a test checks that they agree).
CREATE OR REPLACE FUNCTION embedplat.ann_index_is_valid(collection_id integer, model_id integer)
RETURNS boolean
LANGUAGE sql
STABLE
AS $fn$
    SELECT coalesce((
        SELECT i.indisvalid
        FROM pg_catalog.pg_class c
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_catalog.pg_index i ON i.indexrelid = c.oid
        WHERE n.nspname = 'embedplat'
          AND c.relname = format('ix_embeddings_ann_c%s_m%s', collection_id, model_id)), false)
$fn$;

-- Queue a back-fill row for every chunk of the collection without a vector of model_id for
-- its current text (all of them when model_id is NULL: the target is not bound yet). Returns
-- how many rows were added.
CREATE OR REPLACE FUNCTION embedplat.switch_enqueue_missing(cid integer, model_id integer)
RETURNS bigint
LANGUAGE plpgsql
VOLATILE
AS $fn$
DECLARE
    added bigint;
BEGIN
    INSERT INTO embedplat.embedding_queue (chunk_id, collection_id, text_hash, for_switch)
    SELECT ch.id, ch.collection_id, ch.text_hash, true
    FROM embedplat.chunks ch
    WHERE ch.collection_id = cid
      AND (model_id IS NULL OR NOT EXISTS (
              SELECT 1 FROM embedplat.embeddings e
              WHERE e.chunk_id = ch.id AND e.model_id = switch_enqueue_missing.model_id
                AND e.text_hash = ch.text_hash))
    ON CONFLICT (chunk_id, for_switch) DO UPDATE
        SET text_hash = EXCLUDED.text_hash
        WHERE embedplat.embedding_queue.text_hash IS DISTINCT FROM EXCLUDED.text_hash;
    GET DIAGNOSTICS added = ROW_COUNT;
    RETURN added;
END
$fn$;

-- How many chunks of the collection lack a vector of model_id for their current text.
CREATE OR REPLACE FUNCTION embedplat.switch_missing_chunks(cid integer, model_id integer)
RETURNS bigint
LANGUAGE sql
STABLE
AS $fn$
    SELECT count(*)
    FROM embedplat.chunks ch
    WHERE ch.collection_id = cid
      AND NOT EXISTS (
          SELECT 1 FROM embedplat.embeddings e
          WHERE e.chunk_id = ch.id AND e.model_id = switch_missing_chunks.model_id
            AND e.text_hash = ch.text_hash)
$fn$;

-- The collection row, locked FOR UPDATE (every switch function starts so); 42704 when unknown.
CREATE OR REPLACE FUNCTION embedplat.switch_lock_collection(collection text, caller text)
RETURNS embedplat.collections
LANGUAGE plpgsql
VOLATILE
AS $fn$
DECLARE
    c embedplat.collections;
BEGIN
    SELECT * INTO c FROM embedplat.collections x WHERE x.name = switch_lock_collection.collection FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION '%: no collection named %', caller, quote_literal(collection)
            USING ERRCODE = 'undefined_object';
    END IF;
    RETURN c;
END
$fn$;

CREATE OR REPLACE FUNCTION embedplat.model_switch(
    collection text,
    model text,
    keep_old boolean DEFAULT false,
    model_id integer DEFAULT NULL
)
RETURNS TABLE (
    collection_name text,
    from_model text,
    to_model text,
    state text,
    chunks bigint,
    chunks_reused bigint,
    chunks_queued bigint
)
LANGUAGE plpgsql
VOLATILE
AS $fn$
DECLARE
    c embedplat.collections;
    target_name text;
    total bigint;
    queued bigint;
BEGIN
    IF model IS NULL OR btrim(model) = '' THEN
        RAISE EXCEPTION 'embedplat.model_switch: name the model to switch to'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    c := embedplat.switch_lock_collection(collection, 'embedplat.model_switch');
    IF model_id IS NOT NULL THEN
        SELECT m.name INTO target_name FROM embedplat.embedding_models m WHERE m.id = model_id;
        IF target_name IS DISTINCT FROM model THEN
            RAISE EXCEPTION 'embedplat.model_switch: model id % is not a model named %', model_id, quote_literal(model)
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END IF;

    IF c.switch_model_name IS NOT NULL THEN
        -- The same switch again resumes it (a chunk missed since is queued); another is refused.
        IF c.switch_model_name <> model
           OR (model_id IS NOT NULL AND c.backfill_model_id IS NOT NULL AND c.backfill_model_id <> model_id) THEN
            RAISE EXCEPTION 'embedplat.model_switch: collection % is switching to % already; let it finish, or cancel it (embedplat.model_switch_cancel) first',
                quote_literal(collection), c.switch_model_name
                USING ERRCODE = 'object_not_in_prerequisite_state';
        END IF;
        UPDATE embedplat.collections x
           SET switch_keep_old = model_switch.keep_old,
               backfill_model_id = coalesce(x.backfill_model_id, model_switch.model_id)
         WHERE x.id = c.id
        RETURNING * INTO c;
        queued := embedplat.switch_enqueue_missing(c.id, c.backfill_model_id);
        SELECT count(*) INTO total FROM embedplat.chunks ch WHERE ch.collection_id = c.id;
        RETURN QUERY SELECT c.name, c.model_name, c.switch_model_name, 'resumed'::text, total,
            c.switch_reused, (SELECT count(*) FROM embedplat.embedding_queue q
                               WHERE q.collection_id = c.id AND q.for_switch);
        RETURN;
    END IF;

    IF (model_id IS NOT NULL AND model_id = c.active_model_id)
       OR (model_id IS NULL AND model = c.model_name) THEN
        RAISE EXCEPTION 'embedplat.model_switch: collection % uses model % already', quote_literal(collection), model
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    IF c.active_model_id IS NULL THEN
        -- Nothing embedded yet: no vector to keep serving; the queued work is the new model's.
        UPDATE embedplat.collections x SET model_name = model_switch.model WHERE x.id = c.id;
        PERFORM pg_notify('embedplat_changes', c.id::text);
        RETURN QUERY SELECT c.name, c.model_name, model, 'switched'::text,
            (SELECT count(*) FROM embedplat.chunks ch WHERE ch.collection_id = c.id), 0::bigint,
            0::bigint;
        RETURN;
    END IF;

    -- A model retired by an earlier switch and not purged yet is back in use: keep its vectors.
    IF model_id IS NOT NULL THEN
        DELETE FROM embedplat.retired_models r
         WHERE r.collection_id = c.id AND r.model_id = model_switch.model_id;
    END IF;
    queued := embedplat.switch_enqueue_missing(c.id, model_id);
    SELECT count(*) INTO total FROM embedplat.chunks ch WHERE ch.collection_id = c.id;
    UPDATE embedplat.collections x
       SET switch_model_name = model_switch.model,
           backfill_model_id = model_switch.model_id,
           switch_started_at = now(),
           switch_keep_old = model_switch.keep_old,
           switch_reused = total - queued
     WHERE x.id = c.id;
    PERFORM pg_notify('embedplat_changes', c.id::text);
    RETURN QUERY SELECT c.name, c.model_name, model, 'started'::text, total, total - queued, queued;
END
$fn$;

COMMENT ON FUNCTION embedplat.model_switch(text, text, boolean, integer) IS
    'Start switching a collection to another model: every chunk is back-filled with it while searches keep using the active one; the swap follows once complete.';

CREATE OR REPLACE FUNCTION embedplat.model_switch_cancel(collection text)
RETURNS TABLE (collection_name text, model text, vectors_deleted bigint, queued_deleted bigint)
LANGUAGE plpgsql
VOLATILE
AS $fn$
DECLARE
    c embedplat.collections;
    vectors bigint := 0;
    queued bigint;
BEGIN
    c := embedplat.switch_lock_collection(collection, 'embedplat.model_switch_cancel');
    IF c.switch_model_name IS NULL THEN
        RAISE EXCEPTION 'embedplat.model_switch_cancel: collection % has no model switch in progress', quote_literal(collection)
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    DELETE FROM embedplat.embedding_queue q WHERE q.collection_id = c.id AND q.for_switch;
    GET DIAGNOSTICS queued = ROW_COUNT;
    -- The back-filled vectors go, but those of the kept model (a rollback was cancelled): they
    -- are still kept.
    IF c.backfill_model_id IS NOT NULL AND c.backfill_model_id IS DISTINCT FROM c.kept_model_id THEN
        DELETE FROM embedplat.embeddings e
         WHERE e.collection_id = c.id AND e.model_id = c.backfill_model_id;
        GET DIAGNOSTICS vectors = ROW_COUNT;
    END IF;
    UPDATE embedplat.collections x
       SET switch_model_name = NULL, backfill_model_id = NULL, switch_started_at = NULL,
           switch_keep_old = false, switch_reused = 0
     WHERE x.id = c.id;
    RETURN QUERY SELECT c.name, c.switch_model_name, vectors, queued;
END
$fn$;

COMMENT ON FUNCTION embedplat.model_switch_cancel(text) IS
    'Abandon a collection''s model switch: its queued back-fill and its vectors are deleted; the active model stays.';

-- The swap. SECURITY DEFINER so that embedplat_worker, which may not change a collection's
-- model, can end the switch it back-filled; it only ever makes a complete target active.
CREATE OR REPLACE FUNCTION embedplat.model_switch_complete(collection text)
RETURNS TABLE (state text, model text, chunks_missing bigint)
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    c embedplat.collections;
    missing bigint;
BEGIN
    c := embedplat.switch_lock_collection(collection, 'embedplat.model_switch_complete');
    IF c.switch_model_name IS NULL THEN
        RETURN QUERY SELECT 'none'::text, NULL::text, 0::bigint;
        RETURN;
    END IF;
    IF c.backfill_model_id IS NULL THEN
        -- No process has loaded the target yet, so no vector of it exists.
        SELECT count(*) INTO missing FROM embedplat.chunks ch WHERE ch.collection_id = c.id;
        RETURN QUERY SELECT 'unbound'::text, c.switch_model_name, missing;
        RETURN;
    END IF;
    -- Under the lock every chunk there is is visible: a chunk written by a transaction that
    -- started before the switch and missed its queue row is found here and queued.
    missing := embedplat.switch_missing_chunks(c.id, c.backfill_model_id);
    IF missing > 0 THEN
        PERFORM embedplat.switch_enqueue_missing(c.id, c.backfill_model_id);
        RETURN QUERY SELECT 'incomplete'::text, c.switch_model_name, missing;
        RETURN;
    END IF;
    -- Searches never fall back from an index to an exact scan because of a swap.
    IF embedplat.ann_index_is_valid(c.id, c.active_model_id)
       AND NOT embedplat.ann_index_is_valid(c.id, c.backfill_model_id) THEN
        RETURN QUERY SELECT 'index_missing'::text, c.switch_model_name, 0::bigint;
        RETURN;
    END IF;

    -- The model that stops being active (unless kept) and a model kept by an earlier switch
    -- that this one replaces go; their vectors are purged after retire_grace().
    INSERT INTO embedplat.retired_models (collection_id, model_id)
    SELECT c.id, m.id
    FROM (VALUES (CASE WHEN NOT c.switch_keep_old THEN c.active_model_id END),
                 (CASE WHEN c.kept_model_id IS DISTINCT FROM c.backfill_model_id
                        AND NOT (c.switch_keep_old AND c.kept_model_id = c.active_model_id)
                       THEN c.kept_model_id END)) AS m(id)
    WHERE m.id IS NOT NULL
    ON CONFLICT (collection_id, model_id) DO UPDATE SET retired_at = now();
    UPDATE embedplat.collections x
       SET model_name = c.switch_model_name,
           active_model_id = c.backfill_model_id,
           kept_model_id = CASE WHEN c.switch_keep_old THEN c.active_model_id END,
           switch_model_name = NULL, backfill_model_id = NULL, switch_started_at = NULL,
           switch_keep_old = false, switch_reused = 0
     WHERE x.id = c.id;
    -- Every chunk has a current vector of the new model: what is queued is done.
    DELETE FROM embedplat.embedding_queue q WHERE q.collection_id = c.id;
    RETURN QUERY SELECT 'switched'::text, c.switch_model_name, 0::bigint;
END
$fn$;

COMMENT ON FUNCTION embedplat.model_switch_complete(text) IS
    'Make a switching collection''s target model active, in one transaction, once every chunk has its vector (and its ANN index exists where the active model has one).';

REVOKE EXECUTE ON FUNCTION embedplat.model_switch_complete(text) FROM PUBLIC;

-- Delete up to batch vectors of the collection's models retired more than retire_grace() ago;
-- a model with none left leaves embedplat.retired_models. Returns the vectors deleted (0: nothing
-- left to purge now). SECURITY DEFINER for embedplat_worker, which may delete vectors but not
-- the bookkeeping row.
CREATE OR REPLACE FUNCTION embedplat.purge_retired_vectors(collection_id integer, batch integer DEFAULT 10000)
RETURNS bigint
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    r record;
    deleted bigint := 0;
    n bigint;
BEGIN
    IF batch IS NULL OR batch < 1 THEN
        RAISE EXCEPTION 'embedplat.purge_retired_vectors: batch must be at least 1, got %', batch
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR r IN
        SELECT rm.model_id FROM embedplat.retired_models rm
        WHERE rm.collection_id = purge_retired_vectors.collection_id
          AND rm.retired_at <= now() - embedplat.retire_grace()
        ORDER BY rm.model_id
    LOOP
        DELETE FROM embedplat.embeddings e
         WHERE e.ctid = ANY (ARRAY(
             SELECT x.ctid FROM embedplat.embeddings x
             WHERE x.collection_id = purge_retired_vectors.collection_id AND x.model_id = r.model_id
             LIMIT batch - deleted));
        GET DIAGNOSTICS n = ROW_COUNT;
        deleted := deleted + n;
        IF NOT EXISTS (SELECT 1 FROM embedplat.embeddings x
                        WHERE x.collection_id = purge_retired_vectors.collection_id
                          AND x.model_id = r.model_id) THEN
            DELETE FROM embedplat.retired_models rm
             WHERE rm.collection_id = purge_retired_vectors.collection_id AND rm.model_id = r.model_id;
        END IF;
        EXIT WHEN deleted >= batch;
    END LOOP;
    RETURN deleted;
END
$fn$;

COMMENT ON FUNCTION embedplat.purge_retired_vectors(integer, integer) IS
    'Delete one batch of the vectors of models a switch retired (after retire_grace()); returns how many.';

REVOKE EXECUTE ON FUNCTION embedplat.purge_retired_vectors(integer, integer) FROM PUBLIC;

-- One row per collection with a switch in progress.
CREATE OR REPLACE VIEW embedplat.model_switches AS
SELECT c.name AS collection,
       c.model_name AS from_model,
       c.switch_model_name AS to_model,
       c.backfill_model_id AS to_model_id,
       c.switch_started_at AS started_at,
       c.switch_keep_old AS keep_old,
       (SELECT count(*) FROM embedplat.chunks ch WHERE ch.collection_id = c.id) AS chunks,
       (SELECT count(*)
          FROM embedplat.embeddings e
          JOIN embedplat.chunks ch ON ch.id = e.chunk_id
         WHERE e.collection_id = c.id AND e.model_id = c.backfill_model_id
           AND e.text_hash = ch.text_hash) AS chunks_done,
       c.switch_reused AS chunks_reused,
       (SELECT count(*) FROM embedplat.embedding_queue q
         WHERE q.collection_id = c.id AND q.for_switch AND q.state = 'pending') AS chunks_queued,
       (SELECT count(*) FROM embedplat.embedding_queue q
         WHERE q.collection_id = c.id AND q.for_switch AND q.state = 'failed') AS chunks_failed,
       now() AS checked_at
FROM embedplat.collections c
WHERE c.switch_model_name IS NOT NULL;

COMMENT ON VIEW embedplat.model_switches IS
    'Model switches in progress: target, chunks done of all, reused, queued and failed.';
