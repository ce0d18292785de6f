-- transactional: false
-- The admin page's message search is the records full-text search now (migrations/0019, whose
-- GIN index it reads): the trigram indexes of migrations/0011 are read by no query, and each cost
-- write time on every insert. Dropped CONCURRENTLY, outside a transaction, so webhook inserts go
-- on meanwhile. The contact and phone indexes of 0011 stay (the page's contact search).
DROP INDEX CONCURRENTLY IF EXISTS meeting_notes_content_trgm_idx;

DROP INDEX CONCURRENTLY IF EXISTS meeting_notes_transcript_trgm_idx;

-- pg_trgm served only those two indexes. It is dropped when this database user may and nothing
-- else uses it; an extension owned by an administrator, or one that something else relies on,
-- stays as it is.
DO $$
BEGIN
    DROP EXTENSION IF EXISTS pg_trgm;
EXCEPTION WHEN dependent_objects_still_exist OR insufficient_privilege THEN
    RAISE NOTICE 'pg_trgm kept: %', SQLERRM;
END
$$;
