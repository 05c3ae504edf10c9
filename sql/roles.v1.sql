-- Least privilege: the shipped group roles and the rules row-level security applies with.
-- docs/security.md ("Roles and row-level security") is the reference.
--
--   embedplat_reader  search and read the collections granted to it (embedplat.collection_grants)
--   embedplat_writer  the same, and write records of the collections granted to it with write
--   embedplat_worker  chunk and embed every collection: read records, write chunks, vectors and
--                     the queue, bind models; no DDL (it owns nothing), no record inserts or
--                     deletes, no grants
--
-- The tables' owner (the admin who runs the migrations) is not subject to row-level security
-- (RLS is enabled, not forced) and keeps full access; so do superusers.
--
-- The policies (migration 0011) call the two functions below. Both are plain SQL, STABLE and
-- SECURITY INVOKER, so the planner inlines them: a policy becomes
--   collection_id IN (SELECT g.collection_id FROM embedplat.collection_grants g WHERE ...)
-- an uncorrelated subquery run once per statement and probed as a hashed set per row (no
-- function call per row), and the search functions' ANN index scans stay index scans.

-- The ids of the collections the current user may read (for_write: write) through a grant to
-- a role whose privileges it has (itself, or a role it is a member of with INHERIT).
CREATE OR REPLACE FUNCTION embedplat.granted_collections(for_write boolean)
RETURNS SETOF integer
LANGUAGE sql
STABLE PARALLEL SAFE
AS $fn$
    SELECT g.collection_id
    FROM embedplat.collection_grants g
    WHERE (g.can_write OR NOT for_write) AND pg_has_role(g.role, 'USAGE')
$fn$;

-- Whether the current user has the privileges of embedplat_worker (false when the role does
-- not exist: the migration could not create it).
CREATE OR REPLACE FUNCTION embedplat.is_worker()
RETURNS boolean
LANGUAGE sql
STABLE PARALLEL SAFE
AS $fn$
    SELECT EXISTS (
        SELECT 1 FROM pg_catalog.pg_roles r
        WHERE r.rolname = 'embedplat_worker' AND pg_has_role(r.oid, 'USAGE'))
$fn$;

-- Create the three group roles where missing (NOLOGIN; roles are cluster-wide, so another
-- database of the cluster may have created them already) and grant them their privileges on
-- this database's schema. A user without CREATEROLE cannot create a missing role: a WARNING
-- says so and that role is skipped (the rest of the schema, RLS included, is installed all
-- the same; run SELECT embedplat.install_roles() again as a user who may create roles).
-- Returns the roles that exist afterwards. Idempotent; migrations adding tables call it again
-- so that the roles' privileges cover them.
CREATE OR REPLACE FUNCTION embedplat.install_roles()
RETURNS text[]
LANGUAGE plpgsql
VOLATILE
AS $fn$
DECLARE
    role_name text;
    installed text[] := '{}';
    may_create boolean;
BEGIN
    SELECT r.rolsuper OR r.rolcreaterole INTO may_create
      FROM pg_catalog.pg_roles r WHERE r.rolname = current_user;
    FOREACH role_name IN ARRAY ARRAY['embedplat_reader', 'embedplat_writer', 'embedplat_worker'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = role_name) THEN
            IF NOT coalesce(may_create, false) THEN
                RAISE WARNING 'embedplat: role % does not exist and % may not create roles (no CREATEROLE); skipped', role_name, current_user
                    USING HINT = 'As a user with CREATEROLE: CREATE ROLE ' || role_name || ' NOLOGIN; then SELECT embedplat.install_roles(); see docs/security.md';
                CONTINUE;
            END IF;
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', role_name);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;  -- created meanwhile by a concurrent migration of another database
            END;
        END IF;
        installed := installed || role_name;

        -- Every role reads through RLS: SELECT on every table and view of the schema.
        EXECUTE format('GRANT USAGE ON SCHEMA embedplat TO %I', role_name);
        EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA embedplat TO %I', role_name);
        IF role_name = 'embedplat_writer' THEN
            EXECUTE format('GRANT INSERT, UPDATE, DELETE ON embedplat.records TO %I', role_name);
            -- ingest locks its collection FOR KEY SHARE, which needs UPDATE on one column;
            -- the policy collections_lock lets it lock but never change the row.
            EXECUTE format('GRANT UPDATE (index_options) ON embedplat.collections TO %I', role_name);
        ELSIF role_name = 'embedplat_worker' THEN
            EXECUTE format('GRANT UPDATE ON embedplat.records TO %I', role_name);
            EXECUTE format('GRANT INSERT, UPDATE, DELETE ON embedplat.chunks, embedplat.embeddings, embedplat.embedding_queue TO %I', role_name);
            EXECUTE format('GRANT INSERT ON embedplat.embedding_models TO %I', role_name);
            EXECUTE format('GRANT UPDATE (active_model_id, backfill_model_id) ON embedplat.collections TO %I', role_name);
            -- Claims lock rows FOR UPDATE through the work views (sql/work.v2.sql), which
            -- needs UPDATE on the view as well as on the table beneath it.
            EXECUTE format('GRANT UPDATE ON embedplat.changed_records, embedplat.stale_records, embedplat.parked_records, embedplat.pending_work, embedplat.claimable_work TO %I', role_name);
        END IF;
    END LOOP;
    RETURN installed;
END
$fn$;
