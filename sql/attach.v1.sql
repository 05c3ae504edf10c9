-- Attached application tables: an app's own table is the source of a collection's records.
--
-- embedplat.attach() validates the table and columns, records the attachment in
-- embedplat.attachments and installs four statement-level triggers on the table (INSERT,
-- UPDATE, DELETE with transition tables, and TRUNCATE). They write embedplat.records in the
-- writer's own transaction; the generated content_hash then makes the sync engine, the workers
-- and the NOTIFY wake-ups work exactly as for ingested records. Rows already in the table are
-- back-filled by embedplat.attach_backfill(), one short transaction per batch (the triggers
-- are installed first, and back-fill and triggers write the same idempotent upsert, so racing
-- app writes are never lost).
--
-- How a source row becomes a record (one definition, embedplat.attach_sql_parts):
--   external_id  one id column: the value's text; several: a JSON array of the values' texts,
--                in id_columns order (embedplat.attach_external_id);
--   content      the non-blank text columns' texts joined with a blank line, as
--                `embedplat ingest --text-field` joins fields (embedplat.attach_text_part);
--                a row with none has no record;
--   metadata     {column: to_jsonb(value)} of the metadata columns (values of types that are
--                not built in: their text);
--   included     content present and, with a filter column, that boolean column true.
-- Values become text through their type's output function (format('%s')), never through a
-- cast an app could define, and under pinned settings (DateStyle, TimeZone, ...), so a row
-- gives the same record whoever writes it.
--
-- The triggers call a function generated for the attachment (embedplat.attach_create_function,
-- in schema embedplat_attach) whose statements are static, so they are planned once per
-- session; an UPDATE that changes no attached column returns before anything else. It is
-- SECURITY DEFINER (owned by the schema owner) with a pinned search_path and schema-qualified
-- names: the app's role needs no rights on embedplat's tables. It never fails the app's
-- statement: an error (a dropped or renamed column, ...) is caught, the attachment is marked
-- unhealthy with it, and the statement goes on.

-- The four triggers of a collection's attachment, one name each.
CREATE OR REPLACE FUNCTION embedplat.attach_trigger_name(collection_id integer, event text)
RETURNS text
LANGUAGE sql
IMMUTABLE STRICT PARALLEL SAFE
RETURN 'embedplat_attach_' || collection_id || '_' || event;

-- The external id of a row from its key values' texts (in id_columns order): the text itself
-- for a one-column key, a JSON array of texts for a composite key, e.g. '["acme", "42"]';
-- reverse it with (external_id::jsonb) ->> 0, ->> 1, ...
CREATE OR REPLACE FUNCTION embedplat.attach_external_id(VARIADIC key_values text[])
RETURNS text
LANGUAGE sql
IMMUTABLE STRICT PARALLEL SAFE
RETURN CASE WHEN cardinality(key_values) = 1 THEN key_values[1]
            ELSE to_jsonb(key_values)::text END;

COMMENT ON FUNCTION embedplat.attach_external_id(text[]) IS
    'External id of an attached row from its key values as text: the value itself for one id column, a JSON array of the texts for several (join back with this function or (id::jsonb) ->> n).';

-- One text column's part of the content: NULL when absent, empty or blank. "Blank" is what
-- Python's str.isspace() calls whitespace (ingest skips such fields; a test checks the list).
CREATE OR REPLACE FUNCTION embedplat.attach_text_part(value text)
RETURNS text
LANGUAGE sql
IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN btrim(value, E'\t\n\u000b\f\r\u001c\u001d\u001e\u001f \u0085\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000') <> ''
    THEN value
END;

-- Whether `value` is valid input for type `type_name`, by a guarded cast: for PostgreSQL 15,
-- which has no pg_input_is_valid (embedplat.attach_valid_sql picks the one to call).
CREATE OR REPLACE FUNCTION embedplat.attach_input_is_valid(value text, type_name text)
RETURNS boolean
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF value IS NULL THEN
        RETURN false;
    END IF;
    BEGIN
        EXECUTE format('SELECT %L::%s', value, type_name);
        RETURN true;
    EXCEPTION WHEN OTHERS THEN
        RETURN false;
    END;
END
$fn$;

-- SQL that tests whether the text `value_sql` is valid input for `type_name`. Each generated
-- test has its own call site with a constant type: one pg_input_is_valid call site fed
-- several types gave wrong answers (its per-call-site cache).
CREATE OR REPLACE FUNCTION embedplat.attach_valid_sql(value_sql text, type_name text)
RETURNS text
LANGUAGE sql
STABLE STRICT
RETURN CASE WHEN current_setting('server_version_num')::int >= 160000
            THEN format('pg_input_is_valid(%s, %L)', value_sql, type_name)
            ELSE format('embedplat.attach_input_is_valid(%s, %L)', value_sql, type_name) END;

-- The SQL expressions that turn a row `s` of the attachment's source into a record, checked
-- against the table as it is now (so a dropped or renamed column is one clear error). With
-- keys_only, only the id columns are needed (a DELETE still works when a text column is gone).
CREATE OR REPLACE FUNCTION embedplat.attach_sql_parts(
    a embedplat.attachments,
    keys_only boolean DEFAULT false,
    OUT key_sql text,
    OUT content_sql text,
    OUT metadata_sql text,
    OUT passes_sql text
)
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    wanted text[];
    types jsonb;
    missing text[];
    col text;
    parts text[] := '{}';
    pairs text[] := '{}';
    objects text[] := '{}';
    value_sql text;
    i integer;
BEGIN
    wanted := a.id_columns;
    IF NOT keys_only THEN
        wanted := wanted || a.text_columns || a.metadata_columns
                  || array_remove(ARRAY[a.filter_column], NULL);
    END IF;
    SELECT jsonb_object_agg(att.attname, att.atttypid::int8)
    INTO types
    FROM pg_attribute att
    WHERE att.attrelid = a.source_relid AND att.attnum > 0 AND NOT att.attisdropped
      AND att.attname = ANY (wanted);
    types := coalesce(types, '{}'::jsonb);
    SELECT array_agg(DISTINCT w ORDER BY w) INTO missing FROM unnest(wanted) w WHERE NOT types ? w;
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION USING
            ERRCODE = 'undefined_column',
            MESSAGE = format('embedplat attachment of collection %s: column %s of %s no longer exists',
                             coalesce((SELECT quote_literal(c.name) FROM embedplat.collections c
                                       WHERE c.id = a.collection_id), a.collection_id::text),
                             array_to_string(missing, ', '),
                             coalesce((SELECT cl.oid::regclass::text FROM pg_class cl
                                       WHERE cl.oid = a.source_relid),
                                      format('%I.%I', a.source_schema, a.source_table))),
            HINT = 'a column was dropped or renamed: re-attach with refresh => true and the current column names';
    END IF;

    IF cardinality(a.id_columns) = 1 THEN
        key_sql := format('format(''%%s'', s.%I)', a.id_columns[1]);
    ELSE
        SELECT 'embedplat.attach_external_id(VARIADIC ARRAY['
               || string_agg(format('format(''%%s'', s.%I)', c), ', ' ORDER BY o) || '])'
        INTO key_sql
        FROM unnest(a.id_columns) WITH ORDINALITY AS u(c, o);
    END IF;
    IF keys_only THEN
        RETURN;
    END IF;

    FOREACH col IN ARRAY a.text_columns LOOP
        parts := parts || format('embedplat.attach_text_part(format(''%%s'', s.%I))', col);
    END LOOP;
    IF cardinality(parts) = 1 THEN
        content_sql := parts[1];
    ELSE
        content_sql := format('NULLIF(concat_ws(E''\n\n'', %s), '''')', array_to_string(parts, ', '));
    END IF;

    -- Built-in types have their JSON form; to_jsonb of another type could run a cast its owner
    -- defined (under this function's rights), so those values are stored as their text.
    FOREACH col IN ARRAY a.metadata_columns LOOP
        IF (types ->> col)::int8 < 16384 THEN
            value_sql := format('to_jsonb(s.%I)', col);
        ELSE
            value_sql := format('CASE WHEN s.%1$I IS NULL THEN ''null''::jsonb '
                                'ELSE to_jsonb(format(''%%s'', s.%1$I)) END', col);
        END IF;
        pairs := pairs || format('%L, %s', col, value_sql);
    END LOOP;
    -- jsonb_build_object takes at most 100 arguments: 50 columns per call, concatenated.
    i := 1;
    WHILE i <= cardinality(pairs) LOOP
        objects := objects || ('jsonb_build_object(' || array_to_string(pairs[i:i + 49], ', ') || ')');
        i := i + 50;
    END LOOP;
    metadata_sql := coalesce(NULLIF(array_to_string(objects, ' || '), ''), '''{}''::jsonb');

    IF a.filter_column IS NULL THEN
        passes_sql := 'true';
    ELSIF (types ->> a.filter_column)::int8 <> 'boolean'::regtype::oid::int8 THEN
        RAISE EXCEPTION USING
            ERRCODE = 'datatype_mismatch',
            MESSAGE = format('embedplat attachment of collection %s: filter column %s is not boolean',
                             coalesce((SELECT quote_literal(c.name) FROM embedplat.collections c
                                       WHERE c.id = a.collection_id), a.collection_id::text),
                             a.filter_column);
    ELSE
        passes_sql := format('coalesce(s.%I, false)', a.filter_column);
    END IF;
END
$fn$;

-- SELECT external_id, content, metadata, passes[, extra], included FROM <from_clause>, where
-- the source row is `s` in from_clause.
CREATE OR REPLACE FUNCTION embedplat.attach_rows_sql(
    a embedplat.attachments, from_clause text, extra_columns text DEFAULT ''
)
RETURNS text
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    p record;
BEGIN
    SELECT * INTO p FROM embedplat.attach_sql_parts(a);
    RETURN format(
        'SELECT d.*, (d.content IS NOT NULL AND d.passes) AS included FROM ('
        'SELECT %s AS external_id, %s AS content, %s AS metadata, %s AS passes%s FROM %s) d',
        p.key_sql, p.content_sql, p.metadata_sql, p.passes_sql, extra_columns, from_clause);
END
$fn$;

-- The one upsert of derived rows into records (triggers and back-fill): `rows_cte` names a
-- CTE with external_id, content, metadata, included; `collection_sql` is the collection id's
-- SQL (a parameter, or the id itself in a generated trigger function). Identical rows are not
-- touched; a content change resets the chunking state exactly as ingest does (store.py).
CREATE OR REPLACE FUNCTION embedplat.attach_upsert_sql(rows_cte text, collection_sql text DEFAULT '$1')
RETURNS text
LANGUAGE sql
IMMUTABLE STRICT
RETURN format($q$
    INSERT INTO embedplat.records AS r (collection_id, external_id, content, metadata)
    SELECT %2$s, x.external_id, x.content, x.metadata FROM %1$s x
    WHERE x.included
    ORDER BY x.external_id
    ON CONFLICT (collection_id, external_id) DO UPDATE
    SET content = EXCLUDED.content,
        metadata = EXCLUDED.metadata,
        updated_at = now(),
        content_changed_at = CASE WHEN r.content IS DISTINCT FROM EXCLUDED.content
                                  THEN now() ELSE r.content_changed_at END,
        chunk_attempts = CASE WHEN r.content IS DISTINCT FROM EXCLUDED.content
                              THEN 0 ELSE r.chunk_attempts END,
        chunk_error = CASE WHEN r.content IS DISTINCT FROM EXCLUDED.content
                           THEN NULL ELSE r.chunk_error END
    WHERE r.content IS DISTINCT FROM EXCLUDED.content
       OR r.metadata IS DISTINCT FROM EXCLUDED.metadata
    RETURNING (r.xmax = 0) AS inserted$q$, rows_cte, collection_sql);

-- Mark an attachment unhealthy. SKIP LOCKED: two app transactions failing at once must not
-- wait for each other here (they could deadlock on their own rows); one mark is enough.
CREATE OR REPLACE FUNCTION embedplat.attach_mark_unhealthy(cid integer, message text)
RETURNS void
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    UPDATE embedplat.attachments
    SET healthy = false,
        last_error = message,
        error_since = CASE WHEN healthy THEN now() ELSE coalesce(error_since, now()) END
    WHERE collection_id = (
        SELECT x.collection_id FROM embedplat.attachments x
        WHERE x.collection_id = cid
          AND (x.healthy OR x.last_error IS DISTINCT FROM message)
        FOR UPDATE SKIP LOCKED);
END;

REVOKE EXECUTE ON FUNCTION embedplat.attach_mark_unhealthy(integer, text) FROM PUBLIC;

-- Delete records with their chunks, vectors and queued work (by cascade: record, then chunks,
-- then queue rows and vectors), the order in which a sync storing vectors locks them too
-- (sync.store_vectors), so the two never deadlock. Called by the trigger function only, so it
-- runs with the trigger's (definer's) rights.
CREATE OR REPLACE FUNCTION embedplat.attach_delete_records(ids bigint[])
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    DELETE FROM embedplat.records r WHERE r.id = ANY (ids);
END;

REVOKE EXECUTE ON FUNCTION embedplat.attach_delete_records(bigint[]) FROM PUBLIC;

-- Generated per-attachment trigger functions live in their own schema: they are no part of
-- embedplat's API, nobody else may create or call anything there, and a downgrade drops it.
CREATE SCHEMA IF NOT EXISTS embedplat_attach;
REVOKE ALL ON SCHEMA embedplat_attach FROM PUBLIC;
COMMENT ON SCHEMA embedplat_attach IS
    'Generated trigger functions of attached tables, one per attachment (embedplat.attach creates, detach drops them).';

-- The trigger function of a collection's attachment: a name derived from the id only.
CREATE OR REPLACE FUNCTION embedplat.attach_function_name(collection_id integer)
RETURNS text
LANGUAGE sql
IMMUTABLE STRICT PARALLEL SAFE
RETURN 'embedplat_attach.attach_trigger_c' || collection_id;

-- (Re)create the trigger function of attachment `a` with the attachment's SQL written in as
-- static statements. Generating once here, instead of deriving and EXECUTE-ing the SQL on
-- every call, is what makes a trigger call cheap: PL/pgSQL plans its static statements once
-- per session (and re-plans them by name when the table changes, so a renamed or dropped
-- column fails the call, which is caught, instead of reading the wrong column).
-- SECURITY DEFINER (owned by the caller of attach, the schema owner) with a pinned
-- search_path; EXECUTE revoked from PUBLIC (firing a trigger needs no EXECUTE right).
-- work_mem is raised for its calls: a 100,000-row statement's CTE and sort spilled to disk
-- at the default.
CREATE OR REPLACE FUNCTION embedplat.attach_create_function(a embedplat.attachments)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    fn text := embedplat.attach_function_name(a.collection_id);
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
        SELECT x.source_relid INTO relid FROM embedplat.attachments x WHERE x.collection_id = %2$s;
        IF relid IS DISTINCT FROM TG_RELID THEN
            RETURN NULL;
        END IF;
        IF TG_OP = 'TRUNCATE' THEN
            DELETE FROM embedplat.records WHERE collection_id = %2$s;
        ELSIF TG_OP = 'DELETE' THEN
            SELECT array_agg(r.id) INTO ids FROM embedplat.records r
            WHERE r.collection_id = %2$s AND r.external_id IN (SELECT %4$s FROM old_rows s);
            PERFORM embedplat.attach_delete_records(ids);
        ELSIF TG_OP = 'INSERT' THEN
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
            -- rows are upserted where they differ from their record, and records of rows that
            -- left the filter or lost their text are deleted.
            SELECT array_agg(r.id) INTO ids FROM embedplat.records r
            WHERE r.collection_id = %2$s
              AND r.external_id IN (SELECT %4$s FROM old_rows s EXCEPT SELECT %4$s FROM new_rows s);
            PERFORM embedplat.attach_delete_records(ids);
            WITH n AS MATERIALIZED (%5$s),
            gone AS (
                DELETE FROM embedplat.records r
                WHERE r.collection_id = %2$s
                  AND r.external_id IN (SELECT n.external_id FROM n WHERE NOT n.included
                                        UNION ALL SELECT %4$s FROM old_rows s)
                  AND NOT EXISTS (SELECT 1 FROM n WHERE n.included AND n.external_id = r.external_id)
            ),
            changed AS (%6$s),
            up AS (%7$s)
            SELECT count(*) INTO written FROM up;
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
        embedplat.attach_upsert_sql('changed', cid));
    EXECUTE format('REVOKE EXECUTE ON FUNCTION %s() FROM PUBLIC', fn);
    EXECUTE format('COMMENT ON FUNCTION %s() IS %L', fn,
                   format('Generated trigger function of collection %s''s attachment: keeps embedplat.records in step with %s; never fails the writer''s statement.',
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
END
$fn$;

-- Detaching (embedplat.detach, or a collection drop cascading here) drops the triggers.
CREATE OR REPLACE FUNCTION embedplat.attachments_after_delete()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM embedplat.attach_drop_triggers(OLD.collection_id, OLD.source_relid);
    RETURN NULL;
END
$fn$;

CREATE TRIGGER attachments_drop_source_triggers
    AFTER DELETE ON embedplat.attachments
    FOR EACH ROW
    EXECUTE FUNCTION embedplat.attachments_after_delete();

-- Attach `source` to `collection` (created with the given model and chunking if missing).
-- id_columns default to the primary key; they must be NOT NULL and covered by a unique
-- index (so a key names one row). With an existing attachment, refresh => true re-attaches
-- with the arguments given (NULL: keep the stored value), e.g. after a column was renamed.
-- Returns the collection id. The back-fill of the rows already there is left to
-- embedplat.attach_backfill(), called in a loop, one transaction per batch.
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
    refresh boolean DEFAULT false
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
        metadata_columns, filter_column)
    VALUES (cid, source, rel.nspname, rel.relname, id_columns, text_columns,
            metadata_columns, filter_column)
    ON CONFLICT (collection_id) DO UPDATE
    SET source_relid = EXCLUDED.source_relid,
        source_schema = EXCLUDED.source_schema,
        source_table = EXCLUDED.source_table,
        id_columns = EXCLUDED.id_columns,
        text_columns = EXCLUDED.text_columns,
        metadata_columns = EXCLUDED.metadata_columns,
        filter_column = EXCLUDED.filter_column,
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

COMMENT ON FUNCTION embedplat.attach(text, regclass, text[], text[], text[], text, text, integer, integer, boolean) IS
    'Attach an app table to a collection: triggers keep its records in step; back-fill the rows already there with embedplat.attach_backfill().';

-- One back-fill batch of `collection`'s attachment, in the caller's transaction; call it in a
-- loop, one transaction per call, until done. Two phases: `forward` walks the source by its
-- key (keyset pagination) and upserts the batch's records, holding FOR SHARE locks on the
-- batch's rows until the caller commits (so a concurrent update or delete of one of them
-- waits for the batch, and then its trigger writes the newer state); `prune` walks the
-- records by external id and deletes those whose source row is gone or not included (each
-- batch locks its records first, then looks at the source with a fresh snapshot). With
-- restart => true the walk starts over (a reconcile).
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
    i integer;
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
            backfilled_at = NULL
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

    SELECT array_agg(format_type(att.atttypid, att.atttypmod) ORDER BY u.o),
           string_agg(format('s.%I', u.c), ', ' ORDER BY u.o),
           string_agg(format('s.%I AS embedplat_k%s', u.c, u.o), ', ' ORDER BY u.o)
    INTO key_types, order_by, raw_keys
    FROM unnest(a.id_columns) WITH ORDINALITY AS u(c, o)
    JOIN pg_attribute att ON att.attrelid = a.source_relid AND att.attname = u.c
                         AND NOT att.attisdropped;
    n := cardinality(a.id_columns);
    IF key_types IS NULL OR cardinality(key_types) <> n THEN
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
        IF rows_read < batch_size THEN
            UPDATE embedplat.attachments
            SET backfill_phase = 'prune', backfill_cursor = NULL, updated_at = now()
            WHERE collection_id = cid;
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
        -- The source row a record came from, found through the key columns' index: the
        -- external id parsed back into key values (NULL when it cannot be one), and the
        -- record kept only if that row still derives exactly this record id and is included.
        IF n = 1 THEN
            cond := format('s.%I = CASE WHEN %s THEN r.external_id::%s END',
                           a.id_columns[1],
                           embedplat.attach_valid_sql('r.external_id', key_types[1]),
                           key_types[1]);
        ELSE
            cond := '';
            FOR i IN 1 .. n LOOP
                cond := cond || CASE WHEN i > 1 THEN ' AND ' ELSE '' END || format(
                    's.%1$I = CASE WHEN %5$s '
                    'AND jsonb_typeof(r.external_id::jsonb) = ''array'' '
                    'AND jsonb_array_length(r.external_id::jsonb) = %2$s '
                    'AND jsonb_typeof(r.external_id::jsonb -> %3$s) = ''string'' '
                    'AND %6$s '
                    'THEN (r.external_id::jsonb ->> %3$s)::%4$s END',
                    a.id_columns[i], n, i - 1, key_types[i],
                    embedplat.attach_valid_sql('r.external_id', 'jsonb'),
                    embedplat.attach_valid_sql(format('r.external_id::jsonb ->> %s', i - 1),
                                               key_types[i]));
            END LOOP;
        END IF;
        EXECUTE format($q$
            WITH gone AS (
                DELETE FROM embedplat.records r
                WHERE r.id = ANY ($1)
                  AND NOT EXISTS (SELECT 1 FROM (%s) d
                                  WHERE d.included AND d.external_id = r.external_id)
                RETURNING 1)
            SELECT count(*) FROM gone$q$,
            embedplat.attach_rows_sql(a, format('ONLY %s s WHERE %s', a.source_relid::regclass, cond)))
        INTO records_deleted
        USING ids;
    END IF;
    IF records_checked < batch_size THEN
        -- A complete pass repaired everything up to its start: errors seen before it are over.
        UPDATE embedplat.attachments x
        SET backfill_phase = 'done', backfill_cursor = NULL, backfilled_at = now(),
            updated_at = now(),
            healthy = true, last_error = NULL, error_since = NULL
        WHERE x.collection_id = cid
          AND (x.healthy OR coalesce(x.error_since < x.backfill_started_at, true));
        IF NOT FOUND THEN
            UPDATE embedplat.attachments x
            SET backfill_phase = 'done', backfill_cursor = NULL, backfilled_at = now(),
                updated_at = now()
            WHERE x.collection_id = cid;
        END IF;
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

-- Re-derive every record of an attached collection from its source (missing, extra and
-- different records), in the caller's one transaction. It holds share locks on every source
-- row until the caller commits: for a large table run attach_backfill(..., restart => true)
-- in a loop of short transactions instead (Python: embedplat.attach.reconcile_attachment).
CREATE OR REPLACE FUNCTION embedplat.attach_reconcile(
    collection text,
    batch_size integer DEFAULT 1000,
    OUT rows_read bigint,
    OUT records_inserted bigint,
    OUT records_updated bigint,
    OUT records_deleted bigint,
    OUT records_checked bigint
)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    b record;
    first boolean := true;
BEGIN
    rows_read := 0; records_inserted := 0; records_updated := 0; records_deleted := 0;
    records_checked := 0;
    LOOP
        b := embedplat.attach_backfill(collection, batch_size, restart => first);
        first := false;
        rows_read := rows_read + b.rows_read;
        records_inserted := records_inserted + b.records_inserted;
        records_updated := records_updated + b.records_updated;
        records_deleted := records_deleted + b.records_deleted;
        records_checked := records_checked + b.records_checked;
        EXIT WHEN b.done;
    END LOOP;
END
$fn$;

COMMENT ON FUNCTION embedplat.attach_reconcile(text, integer) IS
    'Re-derive an attached collection''s records from its source table in one transaction; returns the counts.';

-- Detach: drop the triggers (through embedplat.attachments_after_delete) and, when asked,
-- the records with their chunks, vectors and queued work. The collection itself stays.
CREATE OR REPLACE FUNCTION embedplat.detach(collection text, drop_records boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    cid integer;
BEGIN
    SELECT c.id INTO cid FROM embedplat.collections c WHERE c.name = collection;
    IF cid IS NULL THEN
        RAISE EXCEPTION 'no collection named %', collection USING ERRCODE = 'undefined_object';
    END IF;
    DELETE FROM embedplat.attachments WHERE collection_id = cid;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'collection % is not attached to a table', collection
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF drop_records THEN
        DELETE FROM embedplat.records WHERE collection_id = cid;
    END IF;
END
$fn$;

COMMENT ON FUNCTION embedplat.detach(text, boolean) IS
    'Detach a collection from its table: drops the triggers; drop_records => true deletes the records too.';

-- Every attachment with its health: does the source exist, are its columns there, are the
-- four triggers present and enabled, did a trigger fail, how far is the back-fill, and how
-- many rows the source has (the planner's estimate) against how many records.
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
       a.created_at
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
    'Attached tables and their health: state ok, backfilling, error (a trigger failed: see last_error), triggers_missing, columns_missing or source_dropped.';
