-- Attached application tables, v2: bulk statements queue their keys; a first back-fill skips
-- its prune pass. (v1, migration 0009, has the rest: the row-to-record derivation, the upsert,
-- detach, reconcile; what v2 redefines here replaces v1's definition.)
--
-- A statement that writes at most `inline_rows` rows of an attached table (1,000 by default,
-- per attachment) updates embedplat.records in the writer's own transaction, as in v1. A
-- larger INSERT or UPDATE writes only its rows' keys, 1,000 per row of
-- embedplat.attach_pending, and wakes the workers (NOTIFY embedplat_changes); the next sync of
-- the collection (CLI or Celery) derives those keys' records from the table as it is then
-- (embedplat.attach_drain). Writing a record costs about six times writing the app's row
-- (content copy, content hash, unique key, metadata GIN index, foreign key: see
-- docs/attach.md), so a bulk load pays that later, in short batches, instead of inside its own
-- statement. What must never lag stays synchronous at any size: a DELETE or TRUNCATE removes
-- the records in the writer's transaction, an UPDATE that moves a key or takes a row out of the
-- collection (filter column false, no text left) deletes its record there too.
--
-- Draining a key makes its record equal to what the row derives now (inserted, updated, or
-- deleted when the row is gone or excluded), so keys may be drained in any order, twice, or
-- after an inline statement already wrote the record.

-- The key columns' types as format_type spells them, in id_columns order (NULL where a key
-- column is gone: callers then raise attach_sql_parts' clear error).
CREATE OR REPLACE FUNCTION embedplat.attach_key_types(a embedplat.attachments)
RETURNS text[]
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
RETURN (SELECT array_agg(format_type(att.atttypid, att.atttypmod) ORDER BY u.o)
        FROM unnest(a.id_columns) WITH ORDINALITY AS u(c, o)
        LEFT JOIN pg_attribute att ON att.attrelid = a.source_relid AND att.attname = u.c
                                  AND att.attnum > 0 AND NOT att.attisdropped);

-- The key values an external id (the text SQL `ext_sql`) stands for, one expression per key
-- column, each NULL when the text cannot be such a value: the inverse of
-- attach_external_id, written so that the source's key index can be used.
CREATE OR REPLACE FUNCTION embedplat.attach_key_parse_sql(
    a embedplat.attachments, key_types text[], ext_sql text
)
RETURNS text[]
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    n integer := cardinality(a.id_columns);
    out text[] := '{}';
    i integer;
BEGIN
    IF n = 1 THEN
        RETURN ARRAY[format('CASE WHEN %s THEN (%s)::%s END',
                            embedplat.attach_valid_sql(ext_sql, key_types[1]), ext_sql,
                            key_types[1])];
    END IF;
    FOR i IN 1 .. n LOOP
        out := out || format(
            'CASE WHEN %5$s '
            'AND jsonb_typeof((%1$s)::jsonb) = ''array'' '
            'AND jsonb_array_length((%1$s)::jsonb) = %2$s '
            'AND jsonb_typeof((%1$s)::jsonb -> %3$s) = ''string'' '
            'AND %6$s '
            'THEN ((%1$s)::jsonb ->> %3$s)::%4$s END',
            ext_sql, n, i - 1, key_types[i],
            embedplat.attach_valid_sql(ext_sql, 'jsonb'),
            embedplat.attach_valid_sql(format('(%s)::jsonb ->> %s', ext_sql, i - 1),
                                       key_types[i]));
    END LOOP;
    RETURN out;
END
$fn$;

-- The statement that deletes, of the records whose ids are $1 (locked by the caller), those
-- whose source row is gone or does not derive exactly this record as included; it returns
-- how many. The source row is found through its key (attach_key_parse_sql) and read with the
-- statement's own snapshot, taken after the caller's locks were granted.
CREATE OR REPLACE FUNCTION embedplat.attach_prune_sql(a embedplat.attachments, key_types text[])
RETURNS text
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    parsed text[] := embedplat.attach_key_parse_sql(a, key_types, 'r.external_id');
    cond text;
BEGIN
    SELECT string_agg(format('s.%I = %s', c, parsed[o]), ' AND ' ORDER BY o)
    INTO cond
    FROM unnest(a.id_columns) WITH ORDINALITY AS u(c, o);
    RETURN format($q$
        WITH gone AS (
            DELETE FROM embedplat.records r
            WHERE r.id = ANY ($1)
              AND NOT EXISTS (SELECT 1 FROM (%s) d
                              WHERE d.included AND d.external_id = r.external_id)
            RETURNING 1)
        SELECT count(*) FROM gone$q$,
        embedplat.attach_rows_sql(a, format('ONLY %s s WHERE %s', a.source_relid::regclass, cond)));
END
$fn$;

-- Make the records of `keys` (external ids) of collection `cid` what their rows derive now:
-- first the rows found (locked FOR SHARE, so a writer in flight is waited for and its newer
-- state read) are upserted; then the keys' other records are locked and each deleted unless
-- its row, read afresh, derives it as included. Locks are taken in the order app writes take
-- them (source row, then record) or records alone, so this never deadlocks with a writer.
-- Called by the generated drain functions (with their definer's rights on the source).
CREATE OR REPLACE FUNCTION embedplat.attach_apply(
    cid integer,
    keys text[],
    OUT records_inserted bigint,
    OUT records_updated bigint,
    OUT records_deleted bigint
)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET "DateStyle" = 'ISO, MDY'
SET "IntervalStyle" = 'postgres'
SET "TimeZone" = 'UTC'
SET extra_float_digits = 1
SET bytea_output = 'hex'
AS $fn$
DECLARE
    a embedplat.attachments;
    key_types text[];
    parsed text[];
    kept text[];
    ids bigint[];
BEGIN
    records_inserted := 0; records_updated := 0; records_deleted := 0;
    SELECT * INTO a FROM embedplat.attachments x WHERE x.collection_id = cid;
    IF NOT FOUND OR keys IS NULL OR cardinality(keys) = 0 THEN
        RETURN;
    END IF;
    key_types := embedplat.attach_key_types(a);
    IF array_position(key_types, NULL) IS NOT NULL THEN
        PERFORM embedplat.attach_sql_parts(a);  -- raises the clear "column ... no longer exists"
    END IF;
    parsed := embedplat.attach_key_parse_sql(a, key_types, 'k.external_id');
    EXECUTE format($q$
        WITH b AS MATERIALIZED (%1$s),
        up AS (%2$s)
        SELECT (SELECT count(*) FILTER (WHERE inserted) FROM up),
               (SELECT count(*) FILTER (WHERE NOT inserted) FROM up),
               (SELECT coalesce(array_agg(b.external_id), '{}') FROM b WHERE b.included)$q$,
        embedplat.attach_rows_sql(
            a,
            format('ONLY %s s WHERE (%s) IN (SELECT %s FROM unnest($2::text[]) AS k(external_id)) '
                   'FOR SHARE OF s',
                   a.source_relid::regclass,
                   (SELECT string_agg(format('s.%I', c), ', ' ORDER BY o)
                    FROM unnest(a.id_columns) WITH ORDINALITY AS u(c, o)),
                   array_to_string(parsed, ', '))),
        embedplat.attach_upsert_sql('b'))
    INTO records_inserted, records_updated, kept
    USING cid, keys;

    -- (A set difference, hashed: `<> ALL (kept)` compared every record with every kept key.)
    SELECT array_agg(l.id) INTO ids
    FROM (SELECT r.id FROM embedplat.records r
          WHERE r.collection_id = cid
            AND r.external_id IN (SELECT unnest(keys) EXCEPT SELECT unnest(kept))
          ORDER BY r.external_id
          FOR UPDATE) l;
    IF ids IS NOT NULL THEN
        EXECUTE embedplat.attach_prune_sql(a, key_types) INTO records_deleted USING ids;
    END IF;
END
$fn$;

REVOKE EXECUTE ON FUNCTION embedplat.attach_apply(integer, text[]) FROM PUBLIC;

-- The generated drain function of a collection's attachment (see attach_create_function).
CREATE OR REPLACE FUNCTION embedplat.attach_drain_function_name(collection_id integer)
RETURNS text
LANGUAGE sql
IMMUTABLE STRICT PARALLEL SAFE
RETURN 'embedplat_attach.attach_drain_c' || collection_id;

-- (Re)create the trigger function and the drain function of attachment `a`, with the
-- attachment's SQL written in as static statements. Generating once here, instead of deriving
-- and EXECUTE-ing the SQL on every call, is what makes a trigger call cheap: PL/pgSQL plans
-- its static statements once per session (and re-plans them by name when the table changes,
-- so a renamed or dropped column fails the call, which is caught, instead of reading the
-- wrong column). Both are SECURITY DEFINER (owned by the caller of attach, the schema owner)
-- with a pinned search_path; EXECUTE is revoked from PUBLIC (firing a trigger needs no
-- EXECUTE right) and the drain function's granted to embedplat_worker where that role
-- exists, so a worker drains queued keys without any right on the app's table.
-- work_mem is raised for the trigger's calls: a 100,000-row statement's CTE and sort spilled
-- to disk at the default.
CREATE OR REPLACE FUNCTION embedplat.attach_create_function(a embedplat.attachments)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    fn text := embedplat.attach_function_name(a.collection_id);
    drain text := embedplat.attach_drain_function_name(a.collection_id);
    cid text := a.collection_id::text;
    p record;
    compared text;
BEGIN
    SELECT * INTO p FROM embedplat.attach_sql_parts(a);
    -- Every attached column's value as a literal (NULL and '' differ; same literal, same
    -- record): an UPDATE whose old and new rows agree on all of them changes no record.
    SELECT string_agg(format('format(''%%L'', s.%I)', c), ', ' ORDER BY c)
    INTO compared
    FROM (SELECT DISTINCT c FROM unnest(a.id_columns || a.text_columns || a.metadata_columns
                                        || array_remove(ARRAY[a.filter_column], NULL)) c) u;
    EXECUTE format($create$
CREATE OR REPLACE FUNCTION %1$s()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET "DateStyle" = 'ISO, MDY'
SET "IntervalStyle" = 'postgres'
SET "TimeZone" = 'UTC'
SET extra_float_digits = 1
SET bytea_output = 'hex'
SET work_mem = '64MB'
AS $body$
-- Generated by embedplat.attach() for collection %2$s: do not edit (refresh re-generates it).
DECLARE
    relid oid;
    inline_limit integer;
    bulk boolean;
    ids bigint[];
    written bigint;
    message text;
    state text;
    detail text;
BEGIN
    BEGIN
        -- Early exit, before anything else: the UPDATE changed no attached column (old and
        -- new rows agree as multisets; a statement updates each row once, so counts match).
        -- (Nested: a DELETE or INSERT trigger has no new_rows or old_rows to plan against.)
        IF TG_OP = 'UPDATE' THEN
            IF NOT EXISTS (SELECT %3$s FROM new_rows s EXCEPT ALL SELECT %3$s FROM old_rows s) THEN
                RETURN NULL;
            END IF;
        END IF;
        -- Detached (the trigger is on its way out), or on another table than the attached
        -- one (a restored dump): write nothing.
        SELECT x.source_relid, x.inline_rows INTO relid, inline_limit
        FROM embedplat.attachments x WHERE x.collection_id = %2$s;
        IF relid IS DISTINCT FROM TG_RELID THEN
            RETURN NULL;
        END IF;
        IF TG_OP = 'TRUNCATE' THEN
            DELETE FROM embedplat.records WHERE collection_id = %2$s;
            DELETE FROM embedplat.attach_pending WHERE collection_id = %2$s;
        ELSIF TG_OP = 'DELETE' THEN
            SELECT array_agg(r.id) INTO ids FROM embedplat.records r
            WHERE r.collection_id = %2$s AND r.external_id IN (SELECT %4$s FROM old_rows s);
            PERFORM embedplat.attach_delete_records(ids);
        ELSIF TG_OP = 'INSERT' THEN
            -- More rows than inline_rows: queue their keys only (1,000 per queue row).
            IF (SELECT count(*) FROM (SELECT FROM new_rows LIMIT inline_limit + 1) c) > inline_limit THEN
                INSERT INTO embedplat.attach_pending (collection_id, external_ids)
                SELECT %2$s, array_agg(q.k)
                FROM (SELECT %4$s AS k, (row_number() OVER () - 1) / 1000 AS g FROM new_rows s) q
                GROUP BY q.g;
                PERFORM pg_notify('embedplat_changes', '%2$s');
                RETURN NULL;
            END IF;
            WITH n AS MATERIALIZED (%5$s),
            gone AS (
                DELETE FROM embedplat.records r
                WHERE r.collection_id = %2$s
                  AND r.external_id IN (SELECT n.external_id FROM n WHERE NOT n.included)
            ),
            changed AS (%6$s),
            up AS (%7$s)
            SELECT count(*) INTO written FROM up;
        ELSE
            -- Keys that changed: their records go first, in the deadlock-safe order; then new
            -- rows are upserted where they differ from their record (or, past inline_rows,
            -- their keys queued), and records of rows that left the filter or lost their text
            -- are deleted.
            SELECT array_agg(r.id) INTO ids FROM embedplat.records r
            WHERE r.collection_id = %2$s
              AND r.external_id IN (SELECT %4$s FROM old_rows s EXCEPT SELECT %4$s FROM new_rows s);
            PERFORM embedplat.attach_delete_records(ids);
            bulk := (SELECT count(*) FROM (SELECT FROM new_rows LIMIT inline_limit + 1) c) > inline_limit;
            WITH n AS MATERIALIZED (%5$s),
            gone AS (
                DELETE FROM embedplat.records r
                WHERE r.collection_id = %2$s
                  AND r.external_id IN (SELECT n.external_id FROM n WHERE NOT n.included
                                        UNION ALL SELECT %4$s FROM old_rows s)
                  AND NOT EXISTS (SELECT 1 FROM n WHERE n.included AND n.external_id = r.external_id)
            ),
            changed AS (%6$s),
            inline_changed AS (SELECT * FROM changed WHERE NOT bulk),
            up AS (%8$s),
            queued AS (
                INSERT INTO embedplat.attach_pending (collection_id, external_ids)
                SELECT %2$s, array_agg(q.external_id)
                FROM (SELECT c.external_id, (row_number() OVER () - 1) / 1000 AS g
                      FROM changed c WHERE bulk) q
                GROUP BY q.g
                RETURNING 1
            )
            SELECT (SELECT count(*) FROM up) + (SELECT count(*) FROM queued) INTO written;
            IF bulk AND written > 0 THEN
                PERFORM pg_notify('embedplat_changes', '%2$s');
            END IF;
        END IF;
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS message = MESSAGE_TEXT, state = RETURNED_SQLSTATE,
                                detail = PG_EXCEPTION_DETAIL;
        -- A column that is gone: name it (and the table) as attach_sql_parts does.
        IF state = '42703' THEN
            BEGIN
                PERFORM embedplat.attach_sql_parts(x, keys_only => TG_OP = 'DELETE')
                FROM embedplat.attachments x WHERE x.collection_id = %2$s;
            EXCEPTION WHEN OTHERS THEN
                GET STACKED DIAGNOSTICS message = MESSAGE_TEXT, state = RETURNED_SQLSTATE,
                                        detail = PG_EXCEPTION_DETAIL;
            END;
        END IF;
        message := format('%%s (SQLSTATE %%s, on %%s of %%s)%%s', message, state, TG_OP,
                          TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME,
                          CASE WHEN coalesce(detail, '') <> '' THEN ': ' || left(detail, 500)
                               ELSE '' END);
        BEGIN
            PERFORM embedplat.attach_mark_unhealthy(%2$s, message);
        EXCEPTION WHEN OTHERS THEN
            NULL;  -- the app's write goes on whatever happens here
        END;
        RAISE WARNING 'embedplat: records of collection %% were not updated: %%', %2$s, message
            USING HINT = 'see embedplat.attachment_status; repair with embedplat.attach_reconcile()';
    END;
    RETURN NULL;
END
$body$
$create$,
        fn, cid, compared, p.key_sql,
        embedplat.attach_rows_sql(a, 'new_rows s'),
        format('SELECT n.* FROM n LEFT JOIN embedplat.records r '
               'ON r.collection_id = %s AND r.external_id = n.external_id '
               'WHERE n.included AND (r.id IS NULL OR r.content IS DISTINCT FROM n.content '
               'OR r.metadata IS DISTINCT FROM n.metadata)', cid),
        embedplat.attach_upsert_sql('changed', cid),
        embedplat.attach_upsert_sql('inline_changed', cid));
    EXECUTE format('REVOKE EXECUTE ON FUNCTION %s() FROM PUBLIC', fn);
    EXECUTE format('COMMENT ON FUNCTION %s() IS %L', fn,
                   format('Generated trigger function of collection %s''s attachment: keeps embedplat.records in step with %s; never fails the writer''s statement.',
                          a.collection_id, a.source_relid::regclass));

    -- The drain: take queued keys (whole queue rows, up to batch_size keys, skipping rows
    -- another drain holds) and make their records what the rows derive now.
    EXECUTE format($create$
CREATE OR REPLACE FUNCTION %1$s(
    batch_size integer,
    OUT keys_read bigint,
    OUT records_inserted bigint,
    OUT records_updated bigint,
    OUT records_deleted bigint,
    OUT done boolean
)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $body$
-- Generated by embedplat.attach() for collection %2$s: do not edit (refresh re-generates it).
DECLARE
    e record;
    taken bigint[] := '{}';
    keys text[] := '{}';
    applied record;
BEGIN
    records_inserted := 0; records_updated := 0; records_deleted := 0;
    FOR e IN SELECT p.id, p.external_ids FROM embedplat.attach_pending p
             WHERE p.collection_id = %2$s ORDER BY p.id FOR UPDATE SKIP LOCKED LOOP
        taken := taken || e.id;
        keys := keys || e.external_ids;
        EXIT WHEN cardinality(keys) >= batch_size;
    END LOOP;
    keys_read := cardinality(keys);
    done := keys_read < batch_size;
    IF keys_read > 0 THEN
        applied := embedplat.attach_apply(%2$s, keys);
        records_inserted := applied.records_inserted;
        records_updated := applied.records_updated;
        records_deleted := applied.records_deleted;
        DELETE FROM embedplat.attach_pending WHERE id = ANY (taken);
    END IF;
END
$body$
$create$, drain, cid);
    EXECUTE format('REVOKE EXECUTE ON FUNCTION %s(integer) FROM PUBLIC', drain);
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'embedplat_worker') THEN
        EXECUTE 'GRANT USAGE ON SCHEMA embedplat_attach TO embedplat_worker';
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s(integer) TO embedplat_worker', drain);
    END IF;
    EXECUTE format('COMMENT ON FUNCTION %s(integer) IS %L', drain,
                   format('Generated drain function of collection %s''s attachment: derives the records of keys queued by bulk statements on %s.',
                          a.collection_id, a.source_relid::regclass));
    RETURN fn;
END
$fn$;

REVOKE EXECUTE ON FUNCTION embedplat.attach_create_function(embedplat.attachments) FROM PUBLIC;

-- Drop a collection's triggers from its source table (when that table still exists), then
-- their generated function.
CREATE OR REPLACE FUNCTION embedplat.attach_drop_triggers(cid integer, relid oid)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    event text;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_class WHERE oid = relid) THEN
        FOREACH event IN ARRAY ARRAY['insert', 'update', 'delete', 'truncate'] LOOP
            EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s',
                           embedplat.attach_trigger_name(cid, event), relid::regclass);
        END LOOP;
    END IF;
    EXECUTE format('DROP FUNCTION IF EXISTS %s()', embedplat.attach_function_name(cid));
    EXECUTE format('DROP FUNCTION IF EXISTS %s(integer)', embedplat.attach_drain_function_name(cid));
END
$fn$;

-- Attach `source` to `collection` (created with the given model and chunking if missing).
-- id_columns default to the primary key; they must be NOT NULL and covered by a unique
-- index (so a key names one row). With an existing attachment, refresh => true re-attaches
-- with the arguments given (NULL: keep the stored value), e.g. after a column was renamed.
-- inline_rows: statements writing more rows than this queue their keys instead of writing
-- records (see the top of this file; NULL keeps the stored value, 1,000 for a new attachment;
-- a very large value keeps every statement's records in the writer's transaction).
-- Returns the collection id. The back-fill of the rows already there is left to
-- embedplat.attach_backfill(), called in a loop, one transaction per batch; it skips its
-- prune pass when the collection had no records (nothing can be stale then).
CREATE OR REPLACE FUNCTION embedplat.attach(
    collection text,
    source regclass,
    id_columns text[] DEFAULT NULL,
    text_columns text[] DEFAULT NULL,
    metadata_columns text[] DEFAULT NULL,
    filter_column text DEFAULT NULL,
    model text DEFAULT 'all-MiniLM-L6-v2',
    chunk_tokens integer DEFAULT 200,
    chunk_overlap integer DEFAULT 32,
    refresh boolean DEFAULT false,
    inline_rows integer DEFAULT NULL
)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET "DateStyle" = 'ISO, MDY'
SET "IntervalStyle" = 'postgres'
SET "TimeZone" = 'UTC'
SET extra_float_digits = 1
SET bytea_output = 'hex'
AS $fn$
DECLARE
    cid integer;
    old embedplat.attachments;
    a embedplat.attachments;
    rel record;
    col text;
    event text;
    referencing text;
    all_columns text[];
    fn text;
BEGIN
    IF collection IS NULL OR source IS NULL THEN
        RAISE EXCEPTION 'embedplat.attach: collection and source are required'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT c.oid, c.relkind, c.relpersistence, n.nspname, c.relname
    INTO rel
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.oid = source;
    IF rel.relkind <> 'r' OR rel.relpersistence = 't' THEN
        RAISE EXCEPTION 'embedplat.attach: % is not a permanent ordinary table', source
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'views, partitioned, foreign and temporary tables cannot be attached';
    END IF;
    IF rel.nspname = 'embedplat' THEN
        RAISE EXCEPTION 'embedplat.attach: % belongs to embedplat itself', source
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    SELECT c.id INTO cid FROM embedplat.collections c WHERE c.name = collection;
    IF cid IS NOT NULL THEN
        SELECT * INTO old FROM embedplat.attachments x WHERE x.collection_id = cid FOR UPDATE;
        IF FOUND AND NOT refresh THEN
            RAISE EXCEPTION 'embedplat.attach: collection % is already attached to %',
                            collection, old.source_relid::regclass
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'pass refresh => true to re-attach it, or embedplat.detach() it first';
        END IF;
    END IF;

    -- Stored values where a refresh leaves an argument out; the primary key by default.
    id_columns := coalesce(id_columns, old.id_columns);
    text_columns := coalesce(text_columns, old.text_columns);
    metadata_columns := coalesce(metadata_columns, old.metadata_columns, '{}'::text[]);
    -- On a refresh, NULL keeps the stored filter column and '' removes it.
    inline_rows := coalesce(inline_rows, old.inline_rows, 1000);
    IF inline_rows < 0 THEN
        RAISE EXCEPTION 'embedplat.attach: inline_rows must be 0 or more, got %', inline_rows
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF filter_column IS NULL THEN
        filter_column := old.filter_column;
    ELSIF filter_column = '' THEN
        filter_column := NULL;
    END IF;
    IF id_columns IS NULL THEN
        SELECT array_agg(att.attname::text ORDER BY k.ord)
        INTO id_columns
        FROM pg_index i
        CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
        JOIN pg_attribute att ON att.attrelid = i.indrelid AND att.attnum = k.attnum
        WHERE i.indrelid = source AND i.indisprimary;
        IF id_columns IS NULL THEN
            RAISE EXCEPTION 'embedplat.attach: % has no primary key', source
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'name the id columns (id_columns => ARRAY[...]): NOT NULL columns covered by a unique index';
        END IF;
    END IF;
    IF text_columns IS NULL OR cardinality(text_columns) = 0 THEN
        RAISE EXCEPTION 'embedplat.attach: name at least one text column (text_columns => ARRAY[...])'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF cardinality(id_columns) = 0 THEN
        RAISE EXCEPTION 'embedplat.attach: id_columns is empty'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- Every column exists (by its exact name), once per list.
    all_columns := id_columns || text_columns || metadata_columns
                   || array_remove(ARRAY[filter_column], NULL);
    FOREACH col IN ARRAY all_columns LOOP
        IF col IS NULL OR NOT EXISTS (
            SELECT 1 FROM pg_attribute att
            WHERE att.attrelid = source AND att.attname = col AND att.attnum > 0
              AND NOT att.attisdropped) THEN
            RAISE EXCEPTION 'embedplat.attach: % has no column %', source, coalesce(quote_literal(col), 'NULL')
                USING ERRCODE = 'undefined_column';
        END IF;
    END LOOP;
    IF (SELECT count(DISTINCT c) FROM unnest(id_columns) c) < cardinality(id_columns)
       OR (SELECT count(DISTINCT c) FROM unnest(text_columns) c) < cardinality(text_columns)
       OR (SELECT count(DISTINCT c) FROM unnest(metadata_columns) c) < cardinality(metadata_columns) THEN
        RAISE EXCEPTION 'embedplat.attach: a column is named twice in one list'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF EXISTS (SELECT 1 FROM pg_attribute att
               WHERE att.attrelid = source AND att.attname = ANY (id_columns)
                 AND NOT att.attnotnull) THEN
        RAISE EXCEPTION 'embedplat.attach: id columns of % must be NOT NULL', source
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Some unique index (immediate, not partial, on plain columns) covered by the id columns:
    -- then a key names one row, and a statement never carries one key twice.
    IF NOT EXISTS (
        SELECT 1 FROM pg_index i
        WHERE i.indrelid = source AND i.indisunique AND i.indimmediate AND i.indisvalid
          AND i.indpred IS NULL AND i.indexprs IS NULL
          AND NOT EXISTS (
              SELECT 1 FROM unnest(i.indkey::int2[]) AS k(attnum)
              JOIN pg_attribute att ON att.attrelid = i.indrelid AND att.attnum = k.attnum
              WHERE k.attnum <> 0 AND att.attname <> ALL (id_columns))) THEN
        RAISE EXCEPTION 'embedplat.attach: no primary key or unique index of % is covered by the id columns %',
                        source, id_columns
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'id columns must identify one row: a primary key or a unique, non-partial, non-deferrable index over them';
    END IF;
    IF filter_column IS NOT NULL AND (
        SELECT att.atttypid FROM pg_attribute att
        WHERE att.attrelid = source AND att.attname = filter_column) <> 'boolean'::regtype THEN
        RAISE EXCEPTION 'embedplat.attach: filter column % of % must be boolean', filter_column, source
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'for a condition, add a generated column: ALTER TABLE ... ADD COLUMN embed boolean GENERATED ALWAYS AS (status = ''published'') STORED';
    END IF;

    IF cid IS NULL THEN
        INSERT INTO embedplat.collections (name, model_name, chunk_tokens, chunk_overlap)
        VALUES (collection, model, chunk_tokens, chunk_overlap)
        ON CONFLICT (name) DO NOTHING;
        SELECT c.id INTO cid FROM embedplat.collections c WHERE c.name = collection;
    END IF;

    IF old.collection_id IS NOT NULL THEN
        PERFORM embedplat.attach_drop_triggers(cid, old.source_relid);
    END IF;
    INSERT INTO embedplat.attachments AS x (
        collection_id, source_relid, source_schema, source_table, id_columns, text_columns,
        metadata_columns, filter_column, inline_rows, backfill_prune)
    VALUES (cid, source, rel.nspname, rel.relname, id_columns, text_columns,
            metadata_columns, filter_column, inline_rows,
            EXISTS (SELECT 1 FROM embedplat.records r WHERE r.collection_id = cid))
    ON CONFLICT (collection_id) DO UPDATE
    SET source_relid = EXCLUDED.source_relid,
        source_schema = EXCLUDED.source_schema,
        source_table = EXCLUDED.source_table,
        id_columns = EXCLUDED.id_columns,
        text_columns = EXCLUDED.text_columns,
        metadata_columns = EXCLUDED.metadata_columns,
        filter_column = EXCLUDED.filter_column,
        inline_rows = EXCLUDED.inline_rows,
        backfill_prune = EXCLUDED.backfill_prune,
        healthy = true,
        last_error = NULL,
        error_since = NULL,
        backfill_phase = 'forward',
        backfill_cursor = NULL,
        backfill_started_at = now(),
        backfilled_at = NULL,
        updated_at = now()
    RETURNING * INTO a;

    -- The derivation must plan against the table as it is (fails here, not in a trigger).
    EXECUTE embedplat.attach_rows_sql(a, format('ONLY %s s LIMIT 0', source));
    fn := embedplat.attach_create_function(a);

    -- Triggers first, back-fill after: CREATE TRIGGER waits for writers in flight, so every
    -- row committed later passes a trigger, and every row committed before is back-filled.
    FOREACH event IN ARRAY ARRAY['insert', 'update', 'delete', 'truncate'] LOOP
        referencing := CASE event
            WHEN 'insert' THEN 'REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT'
            WHEN 'update' THEN 'REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT'
            WHEN 'delete' THEN 'REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT'
            ELSE 'FOR EACH STATEMENT' END;
        EXECUTE format('CREATE TRIGGER %I AFTER %s ON %s %s EXECUTE FUNCTION %s()',
                       embedplat.attach_trigger_name(cid, event), upper(event), source,
                       referencing, fn);
    END LOOP;
    RETURN cid;
END
$fn$;

COMMENT ON FUNCTION embedplat.attach(text, regclass, text[], text[], text[], text, text, integer, integer, boolean, integer) IS
    'Attach an app table to a collection: triggers keep its records in step; back-fill the rows already there with embedplat.attach_backfill().';

-- The end of a back-fill pass: a complete pass repaired everything up to its start, so an
-- error seen before it started is over (one seen since stays).
CREATE OR REPLACE FUNCTION embedplat.attach_backfill_done(cid integer)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    UPDATE embedplat.attachments x
    SET backfill_phase = 'done', backfill_cursor = NULL, backfilled_at = now(),
        updated_at = now(),
        healthy = x.healthy OR coalesce(x.error_since < x.backfill_started_at, true),
        last_error = CASE WHEN x.healthy OR coalesce(x.error_since < x.backfill_started_at, true)
                          THEN NULL ELSE x.last_error END,
        error_since = CASE WHEN x.healthy OR coalesce(x.error_since < x.backfill_started_at, true)
                           THEN NULL ELSE x.error_since END
    WHERE x.collection_id = cid;
END;

-- One back-fill batch of `collection`'s attachment, in the caller's transaction; call it in a
-- loop, one transaction per call, until done. Two phases: `forward` walks the source by its
-- key (keyset pagination) and upserts the batch's records, holding FOR SHARE locks on the
-- batch's rows until the caller commits (so a concurrent update or delete of one of them
-- waits for the batch, and then its trigger writes the newer state); `prune` walks the
-- records by external id and deletes those whose source row is gone or not included (each
-- batch locks its records first, then looks at the source with a fresh snapshot; skipped
-- after a first attach to a collection without records). With restart => true the walk
-- starts over, prune included (a reconcile).
CREATE OR REPLACE FUNCTION embedplat.attach_backfill(
    collection text,
    batch_size integer DEFAULT 1000,
    restart boolean DEFAULT false,
    OUT rows_read bigint,
    OUT records_inserted bigint,
    OUT records_updated bigint,
    OUT records_deleted bigint,
    OUT records_checked bigint,
    OUT done boolean
)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET "DateStyle" = 'ISO, MDY'
SET "IntervalStyle" = 'postgres'
SET "TimeZone" = 'UTC'
SET extra_float_digits = 1
SET bytea_output = 'hex'
AS $fn$
DECLARE
    a embedplat.attachments;
    cid integer;
    key_types text[];
    cond text := '';
    order_by text;
    raw_keys text;
    cursor_sql text;
    last_key text[];
    ids bigint[];
    last_id text;
    parsed text;
    n integer;
BEGIN
    rows_read := 0; records_inserted := 0; records_updated := 0; records_deleted := 0;
    records_checked := 0;
    IF batch_size IS NULL OR batch_size < 1 OR batch_size > 100000 THEN
        RAISE EXCEPTION 'embedplat.attach_backfill: batch_size must be between 1 and 100000'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT c.id INTO cid FROM embedplat.collections c WHERE c.name = collection;
    IF cid IS NULL THEN
        RAISE EXCEPTION 'no collection named %', collection USING ERRCODE = 'undefined_object';
    END IF;
    IF restart THEN
        UPDATE embedplat.attachments
        SET backfill_phase = 'forward', backfill_cursor = NULL, backfill_started_at = now(),
            backfilled_at = NULL, backfill_prune = true
        WHERE collection_id = cid;
    END IF;
    SELECT * INTO a FROM embedplat.attachments x WHERE x.collection_id = cid;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'collection % is not attached to a table', collection
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_class cl WHERE cl.oid = a.source_relid) THEN
        RAISE EXCEPTION 'the table attached to collection % (%.%) no longer exists',
                        collection, a.source_schema, a.source_table
            USING ERRCODE = 'undefined_table',
                  HINT = 'embedplat.detach() the collection, or attach it to another table';
    END IF;
    done := a.backfill_phase = 'done';
    IF done THEN
        RETURN;
    END IF;

    key_types := embedplat.attach_key_types(a);
    SELECT string_agg(format('s.%I', u.c), ', ' ORDER BY u.o),
           string_agg(format('s.%I AS embedplat_k%s', u.c, u.o), ', ' ORDER BY u.o)
    INTO order_by, raw_keys
    FROM unnest(a.id_columns) WITH ORDINALITY AS u(c, o);
    n := cardinality(a.id_columns);
    IF array_position(key_types, NULL) IS NOT NULL THEN
        PERFORM embedplat.attach_sql_parts(a);  -- raises the clear "column ... no longer exists"
    END IF;

    IF a.backfill_phase = 'forward' THEN
        IF a.backfill_cursor IS NOT NULL THEN
            SELECT format('WHERE ROW(%s) > ROW(%s)', order_by,
                          string_agg(format('$2[%s]::%s', o, t), ', ' ORDER BY o))
            INTO cond
            FROM unnest(key_types) WITH ORDINALITY AS u(t, o);
        END IF;
        SELECT 'ARRAY[' || string_agg(format('format(''%%s'', b.embedplat_k%s)', o), ', ' ORDER BY o)
               || ']::text[]',
               string_agg(format('b.embedplat_k%s DESC', o), ', ' ORDER BY o)
        INTO cursor_sql, parsed
        FROM generate_series(1, n) AS o;
        EXECUTE format($q$
            WITH b AS MATERIALIZED (%1$s),
            up AS (%2$s),
            gone AS (
                DELETE FROM embedplat.records r USING b
                WHERE r.collection_id = $1 AND r.external_id = b.external_id AND NOT b.included
                RETURNING 1
            )
            SELECT (SELECT count(*) FROM b),
                   (SELECT count(*) FILTER (WHERE inserted) FROM up),
                   (SELECT count(*) FILTER (WHERE NOT inserted) FROM up),
                   (SELECT count(*) FROM gone),
                   (SELECT %3$s FROM b ORDER BY %4$s LIMIT 1)$q$,
            embedplat.attach_rows_sql(
                a,
                format('ONLY %s s %s ORDER BY %s LIMIT $3 FOR SHARE OF s',
                       a.source_relid::regclass, cond, order_by),
                ', ' || raw_keys),
            embedplat.attach_upsert_sql('b'),
            cursor_sql, parsed)
        INTO rows_read, records_inserted, records_updated, records_deleted, last_key
        USING cid, a.backfill_cursor, batch_size;
        IF rows_read < batch_size AND a.backfill_prune THEN
            UPDATE embedplat.attachments
            SET backfill_phase = 'prune', backfill_cursor = NULL, updated_at = now()
            WHERE collection_id = cid;
        ELSIF rows_read < batch_size THEN
            -- No prune pass (the collection had no records when attached): done, and errors
            -- seen before this pass started are over, as after a prune.
            PERFORM embedplat.attach_backfill_done(cid);
            done := true;
        ELSE
            UPDATE embedplat.attachments
            SET backfill_cursor = last_key, updated_at = now()
            WHERE collection_id = cid;
        END IF;
        RETURN;
    END IF;

    -- prune: lock the next records first, then judge them against the source as it is now.
    SELECT array_agg(l.id), max(l.external_id), count(*)
    INTO ids, last_id, records_checked
    FROM (SELECT r.id, r.external_id FROM embedplat.records r
          WHERE r.collection_id = cid
            AND (a.backfill_cursor IS NULL OR r.external_id > a.backfill_cursor[1])
          ORDER BY r.external_id
          LIMIT batch_size
          FOR UPDATE) l;
    IF records_checked > 0 THEN
        EXECUTE embedplat.attach_prune_sql(a, key_types) INTO records_deleted USING ids;
    END IF;
    IF records_checked < batch_size THEN
        PERFORM embedplat.attach_backfill_done(cid);
        done := true;
    ELSE
        UPDATE embedplat.attachments
        SET backfill_cursor = ARRAY[last_id], updated_at = now()
        WHERE collection_id = cid;
    END IF;
END
$fn$;

COMMENT ON FUNCTION embedplat.attach_backfill(text, integer, boolean) IS
    'One back-fill batch of an attached collection (call in a loop, one transaction each, until done): upserts records of source rows, then deletes records without a source row.';

-- One drain batch of `collection`'s queued keys (written by statements past inline_rows), in
-- the caller's transaction; call it in a loop, one transaction per call, until done. Runs the
-- attachment's generated drain function, so the caller needs no right on the app's table.
CREATE OR REPLACE FUNCTION embedplat.attach_drain(
    collection text,
    batch_size integer DEFAULT 1000,
    OUT keys_read bigint,
    OUT records_inserted bigint,
    OUT records_updated bigint,
    OUT records_deleted bigint,
    OUT done boolean
)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    cid integer;
BEGIN
    IF batch_size IS NULL OR batch_size < 1 OR batch_size > 100000 THEN
        RAISE EXCEPTION 'embedplat.attach_drain: batch_size must be between 1 and 100000'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT c.id INTO cid FROM embedplat.collections c WHERE c.name = collection;
    IF cid IS NULL THEN
        RAISE EXCEPTION 'no collection named %', collection USING ERRCODE = 'undefined_object';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM embedplat.attachments x WHERE x.collection_id = cid) THEN
        RAISE EXCEPTION 'collection % is not attached to a table', collection
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    EXECUTE format('SELECT * FROM %s($1)', embedplat.attach_drain_function_name(cid))
    INTO keys_read, records_inserted, records_updated, records_deleted, done
    USING batch_size;
END
$fn$;

COMMENT ON FUNCTION embedplat.attach_drain(text, integer) IS
    'One drain batch of an attached collection (call in a loop, one transaction each, until done): derives the records of keys that bulk statements queued.';

-- Every attachment with its health (as in v1), its inline_rows and how many keys wait in the
-- queue for a drain (pending_rows).
CREATE OR REPLACE VIEW embedplat.attachment_status AS
SELECT c.name AS collection,
       a.collection_id,
       CASE WHEN cl.oid IS NOT NULL THEN a.source_relid::regclass::text
            ELSE format('%I.%I', a.source_schema, a.source_table) END AS source,
       cl.oid IS NOT NULL AS source_exists,
       a.id_columns,
       a.text_columns,
       a.metadata_columns,
       a.filter_column,
       coalesce(cols.missing, '{}'::text[]) AS missing_columns,
       coalesce(trg.enabled, 0) AS triggers_enabled,
       a.healthy,
       a.last_error,
       a.error_since,
       a.backfill_phase,
       a.backfilled_at,
       CASE WHEN cl.reltuples >= 0 THEN cl.reltuples::bigint END AS source_rows_estimate,
       (SELECT count(*) FROM embedplat.records r WHERE r.collection_id = a.collection_id)
           AS records,
       CASE WHEN cl.oid IS NULL THEN 'source_dropped'
            WHEN cols.missing IS NOT NULL THEN 'columns_missing'
            WHEN coalesce(trg.enabled, 0) < 4 THEN 'triggers_missing'
            WHEN NOT a.healthy THEN 'error'
            WHEN a.backfill_phase <> 'done' THEN 'backfilling'
            ELSE 'ok' END AS state,
       a.created_at,
       a.inline_rows,
       (SELECT coalesce(sum(cardinality(p.external_ids)), 0)::bigint
        FROM embedplat.attach_pending p WHERE p.collection_id = a.collection_id) AS pending_rows
FROM embedplat.attachments a
JOIN embedplat.collections c ON c.id = a.collection_id
LEFT JOIN pg_catalog.pg_class cl ON cl.oid = a.source_relid
LEFT JOIN LATERAL (
    SELECT array_agg(w ORDER BY w) AS missing
    FROM unnest(a.id_columns || a.text_columns || a.metadata_columns
                || array_remove(ARRAY[a.filter_column], NULL)) AS w
    WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute att
                      WHERE att.attrelid = a.source_relid AND att.attname = w
                        AND att.attnum > 0 AND NOT att.attisdropped)
) cols ON true
LEFT JOIN LATERAL (
    SELECT count(*)::int AS enabled
    FROM pg_catalog.pg_trigger t
    WHERE t.tgrelid = a.source_relid AND t.tgenabled <> 'D'
      AND t.tgname IN (embedplat.attach_trigger_name(a.collection_id, 'insert'),
                       embedplat.attach_trigger_name(a.collection_id, 'update'),
                       embedplat.attach_trigger_name(a.collection_id, 'delete'),
                       embedplat.attach_trigger_name(a.collection_id, 'truncate'))
) trg ON true;

COMMENT ON VIEW embedplat.attachment_status IS
    'Attached tables and their health: state ok, backfilling, error (a trigger failed: see last_error), triggers_missing, columns_missing or source_dropped; pending_rows keys queued by bulk statements wait for a drain (the next sync).';
