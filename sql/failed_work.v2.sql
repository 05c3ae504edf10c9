-- embedplat.failed_work: work parked after too many failed attempts, with the last error.
-- `embedplat sync --retry-failed` puts it back in the queue. v2: parked records come from
-- embedplat.parked_records (sql/work.v1.sql) instead of repeating its condition.
CREATE OR REPLACE VIEW embedplat.failed_work AS
SELECT c.name AS collection,
       'chunk'::text AS kind,
       r.external_id AS record_id,
       q.chunk_id,
       q.attempts,
       q.last_error,
       q.enqueued_at AS since
FROM embedplat.embedding_queue q
JOIN embedplat.chunks ch ON ch.id = q.chunk_id
JOIN embedplat.records r ON r.id = ch.record_id
JOIN embedplat.collections c ON c.id = q.collection_id
WHERE q.state = 'failed'
UNION ALL
SELECT c.name, 'record', pr.external_id, NULL, pr.chunk_attempts, pr.chunk_error,
       pr.content_changed_at
FROM embedplat.parked_records pr
JOIN embedplat.collections c ON c.id = pr.collection_id;

COMMENT ON VIEW embedplat.failed_work IS
    'Chunks and records whose processing failed too often; re-queue with embedplat sync --retry-failed.';
