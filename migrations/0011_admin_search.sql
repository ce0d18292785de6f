-- transactional: false
-- Searching messages from the admin page: by contact id, by phone, and anywhere in the text or
-- the transcript (trigram indexes of pg_trgm, a contrib extension that ships with PostgreSQL and
-- that a database owner may create since PostgreSQL 13). Built CONCURRENTLY, outside a
-- transaction, so webhook inserts go on while an existing archive is indexed.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE INDEX CONCURRENTLY IF NOT EXISTS meeting_notes_contact_idx
    ON meeting_notes (chatwoot_contact_id, created_at);

CREATE INDEX CONCURRENTLY IF NOT EXISTS meeting_notes_phone_idx
    ON meeting_notes (contact_phone, created_at) WHERE contact_phone IS NOT NULL;

CREATE INDEX CONCURRENTLY IF NOT EXISTS meeting_notes_content_trgm_idx
    ON meeting_notes USING gin (content gin_trgm_ops);

-- Only voice notes have a transcript, and it is written by the transcription job, not on insert.
CREATE INDEX CONCURRENTLY IF NOT EXISTS meeting_notes_transcript_trgm_idx
    ON meeting_notes USING gin (transcript gin_trgm_ops) WHERE transcript IS NOT NULL;

-- The newest rows of each stage's dead letter (the admin page lists them): small, since only rows
-- that failed for good are in them.
CREATE INDEX CONCURRENTLY IF NOT EXISTS meeting_notes_archive_error_idx
    ON meeting_notes (updated_at) WHERE processing_status = 'error';

CREATE INDEX CONCURRENTLY IF NOT EXISTS meeting_notes_transcription_failed_idx
    ON meeting_notes (updated_at) WHERE transcription_status = 'failed';

CREATE INDEX CONCURRENTLY IF NOT EXISTS meeting_notes_classification_failed_idx
    ON meeting_notes (updated_at) WHERE classification_status = 'failed';

CREATE INDEX CONCURRENTLY IF NOT EXISTS message_updates_error_idx
    ON message_updates (updated_at) WHERE processing_status = 'error';
