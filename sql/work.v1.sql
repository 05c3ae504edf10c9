-- The one definition of each unit of work the sync engine, the workers and `status` look at.
-- Python code selects from these views by name; nothing else repeats their conditions.
-- They are simple views, so `SELECT ... FOR UPDATE SKIP LOCKED` on them locks the underlying
-- rows, and their predicates match the partial indexes the tables carry.

-- Records whose content changed since they were chunked: `chunked_hash` is the content hash
-- the current chunks were cut from, `content_hash` is computed by the database on every write.
CREATE OR REPLACE VIEW embedplat.changed_records AS
SELECT r.*
FROM embedplat.records r
WHERE r.chunked_hash IS DISTINCT FROM r.content_hash;

COMMENT ON VIEW embedplat.changed_records IS
    'Records whose content changed since they were chunked (stale or parked).';

-- ... of those, the ones the chunker should take next (not parked after failures).
CREATE OR REPLACE VIEW embedplat.stale_records AS
SELECT cr.*
FROM embedplat.changed_records cr
WHERE cr.chunk_error IS NULL;

COMMENT ON VIEW embedplat.stale_records IS
    'Records waiting to be chunked: content changed and chunking not parked.';

-- ... and the ones whose chunking failed too often (see embedplat.failed_work).
CREATE OR REPLACE VIEW embedplat.parked_records AS
SELECT cr.*
FROM embedplat.changed_records cr
WHERE cr.chunk_error IS NOT NULL;

COMMENT ON VIEW embedplat.parked_records IS
    'Records whose chunking failed too often; re-queue with embedplat sync --retry-failed.';

-- Chunks waiting for a vector (claimable now, leased by a worker, or backing off).
CREATE OR REPLACE VIEW embedplat.pending_work AS
SELECT q.*
FROM embedplat.embedding_queue q
WHERE q.state = 'pending';

COMMENT ON VIEW embedplat.pending_work IS
    'Chunks waiting for a vector: claimable, leased or backing off after a failure.';

-- ... of those, the ones a worker may claim right now: not backing off, lease free or expired.
CREATE OR REPLACE VIEW embedplat.claimable_work AS
SELECT pw.*
FROM embedplat.pending_work pw
WHERE pw.available_at <= now()
  AND (pw.leased_until IS NULL OR pw.leased_until < now());

COMMENT ON VIEW embedplat.claimable_work IS
    'Queued chunks a worker may claim now (FOR UPDATE SKIP LOCKED, then lease).';
