-- Reliability: attempt counts and backoff of the reconciler on every table it re-enqueues, and
-- one view of everything it gave up on (the dead letter).

-- meeting_notes already has attempts and next_attempt_at; the stage they count (archive,
-- transcription, classification) lets each stage start again from zero.
ALTER TABLE meeting_notes ADD COLUMN IF NOT EXISTS attempt_stage text;

ALTER TABLE message_updates ADD COLUMN IF NOT EXISTS attempts integer NOT NULL DEFAULT 0;
ALTER TABLE message_updates ADD COLUMN IF NOT EXISTS next_attempt_at timestamptz;

-- outbox.attempts counts sends (the send job's own); these count re-enqueues by the reconciler.
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS requeue_attempts integer NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS next_attempt_at timestamptz;

-- Everything the reconciler gave up on, newest first: `SELECT * FROM dead_letters`.
CREATE OR REPLACE VIEW dead_letters AS
SELECT 'archive'::text AS stage, id, chatwoot_account_id, chatwoot_conversation_id,
       attempts, error_details, updated_at
  FROM meeting_notes WHERE processing_status = 'error'
UNION ALL
SELECT 'transcription', id, chatwoot_account_id, chatwoot_conversation_id,
       attempts, error_details, updated_at
  FROM meeting_notes WHERE transcription_status = 'failed'
UNION ALL
SELECT 'classification', id, chatwoot_account_id, chatwoot_conversation_id,
       attempts, error_details, updated_at
  FROM meeting_notes WHERE classification_status = 'failed'
UNION ALL
SELECT 'update', u.id, n.chatwoot_account_id, n.chatwoot_conversation_id,
       u.attempts, u.error_details, u.updated_at
  FROM message_updates u JOIN meeting_notes n ON n.id = u.meeting_note_id
 WHERE u.processing_status = 'error'
UNION ALL
SELECT 'outbox', id, chatwoot_account_id, chatwoot_conversation_id,
       requeue_attempts, error_details, updated_at
  FROM outbox WHERE status = 'failed';
