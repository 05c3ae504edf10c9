-- Change notifications: wake the workers' listener when records need re-chunking.
--
-- After every INSERT into embedplat.records, and every UPDATE that changed a record's content,
-- one NOTIFY on channel `embedplat_changes` is sent per collection touched, with the
-- collection's id as payload. The listener (embedplat_workers.listener) turns it into a sync
-- task for that collection; the periodic sweep stays the fallback for lost notifications.
--
-- Statement-level triggers with transition tables, not row-level ones: a bulk ingest of 20,000
-- rows costs one trigger call and one `SELECT DISTINCT` instead of 20,000 plpgsql calls, and
-- sends one notification per collection instead of relying on PostgreSQL to fold 20,000
-- identical ones. Notifications are delivered at commit, so a rolled-back ingest wakes no one.
-- UPDATEs that leave the content alone (metadata-only edits, the sync engine marking records
-- chunked) compare equal on the database-computed content_hash and send nothing.
--
-- A trigger with transition tables serves one event only, hence two triggers, one function.

CREATE OR REPLACE FUNCTION embedplat.notify_record_changes()
RETURNS trigger
LANGUAGE plpgsql
AS $fn$
DECLARE
    cid integer;
BEGIN
    IF TG_OP = 'INSERT' THEN
        FOR cid IN SELECT DISTINCT n.collection_id FROM new_rows n LOOP
            PERFORM pg_notify('embedplat_changes', cid::text);
        END LOOP;
    ELSE
        FOR cid IN
            SELECT DISTINCT n.collection_id
            FROM new_rows n
            JOIN old_rows o ON o.id = n.id
            WHERE o.content_hash IS DISTINCT FROM n.content_hash
        LOOP
            PERFORM pg_notify('embedplat_changes', cid::text);
        END LOOP;
    END IF;
    RETURN NULL;
END
$fn$;

COMMENT ON FUNCTION embedplat.notify_record_changes() IS
    'NOTIFY embedplat_changes, payload collection id, once per collection whose records were inserted or had their content changed by a statement.';

CREATE TRIGGER records_notify_insert
    AFTER INSERT ON embedplat.records
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT
    EXECUTE FUNCTION embedplat.notify_record_changes();

CREATE TRIGGER records_notify_update
    AFTER UPDATE ON embedplat.records
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT
    EXECUTE FUNCTION embedplat.notify_record_changes();
