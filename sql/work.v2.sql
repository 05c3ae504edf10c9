-- v2 of sql/work.v1.sql: a lease whose holder is gone is claimable at once, not when it expires.
--
-- Every process that leases queue rows (a CLI sync, a Celery task) holds, on the connection it
-- claims with, the session advisory lock (7240530, hashtext(worker id)) for as long as it works;
-- 7240530 is LockKey.LEASE_HOLDER in platform/embedplat/db/locks.py (a test checks that they
-- agree). A killed process, a closed connection or a restarted server releases that lock, so
-- its leases stop counting while their `leased_until` is still in the future. The expiry stays
-- as the backstop for a holder that is alive but stuck.

-- The lease holders alive now, by key (hashtext of the worker id, as pg_locks shows it).
CREATE OR REPLACE VIEW embedplat.live_lease_holders AS
SELECT l.objid::int8 AS holder_key
FROM pg_locks l
WHERE l.locktype = 'advisory'
  AND l.granted
  AND l.objsubid = 2
  AND l.classid::int8 = 7240530
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database());

COMMENT ON VIEW embedplat.live_lease_holders IS
    'Keys of the processes holding queue leases that are alive now (their liveness lock is held).';

-- The key under which a worker id appears in pg_locks (objid is an unsigned 32-bit number).
CREATE OR REPLACE FUNCTION embedplat.lease_holder_key(holder text)
RETURNS bigint
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
RETURN hashtext(holder)::bigint & 4294967295;

-- Unchanged from v1 but for the lease test: free, expired, or held by a process that is gone.
CREATE OR REPLACE VIEW embedplat.claimable_work AS
SELECT pw.*
FROM embedplat.pending_work pw
WHERE pw.available_at <= now()
  AND (pw.leased_by IS NULL
       OR pw.leased_until IS NULL
       OR pw.leased_until < now()
       OR embedplat.lease_holder_key(pw.leased_by) NOT IN (
              SELECT holder_key FROM embedplat.live_lease_holders));

-- Who holds unexpired leases now, on how many chunks of which collection, and whether the
-- holder is alive (a dead holder's chunks are already claimable again).
CREATE OR REPLACE VIEW embedplat.lease_holders AS
SELECT pw.collection_id,
       pw.leased_by AS holder,
       count(*) AS chunks,
       max(pw.leased_until) AS leased_until,
       embedplat.lease_holder_key(pw.leased_by) IN (
           SELECT holder_key FROM embedplat.live_lease_holders) AS alive
FROM embedplat.pending_work pw
WHERE pw.leased_by IS NOT NULL AND pw.leased_until >= now()
GROUP BY pw.collection_id, pw.leased_by;

COMMENT ON VIEW embedplat.lease_holders IS
    'Unexpired leases by holder and collection; alive = false means the holder is gone.';
