-- The reconciler: work stuck in a state, re-enqueued with an attempt count and backoff, and
-- the dead letter when it has been tried too often. Each stage has three statements:
-- `<stage>_stuck` (candidates), `<stage>_attempt` (count one more attempt and set the next
-- one, only while still stuck) and `<stage>_give_up` (the dead letter, only while still stuck).
-- Attempts of meeting_notes count per stage (attempt_stage): a new stage starts from zero.
-- %(ids)s is NULL for every row, or an array of ids (`flask requeue --id`).
-- %(due)s false also takes rows whose next attempt is not due yet (`flask requeue`).

-- name: archive_stuck
SELECT id,
       CASE WHEN attempt_stage = 'archive' THEN attempts ELSE 0 END AS attempts,
       error_details
  FROM meeting_notes
 WHERE processing_status = 'received'
   AND updated_at < now() - make_interval(secs => %(grace)s)
   AND (NOT %(due)s OR attempt_stage IS DISTINCT FROM 'archive'
        OR next_attempt_at IS NULL OR next_attempt_at <= now())
   AND (%(ids)s::bigint[] IS NULL OR id = ANY(%(ids)s::bigint[]))
 ORDER BY id
 LIMIT %(limit)s;

-- name: archive_attempt
UPDATE meeting_notes
   SET attempts = CASE WHEN attempt_stage = 'archive' THEN attempts + 1 ELSE 1 END,
       attempt_stage = 'archive',
       next_attempt_at = now() + make_interval(secs => %(delay)s)
 WHERE id = %(id)s AND processing_status = 'received'
RETURNING attempts;

-- name: archive_give_up
UPDATE meeting_notes
   SET processing_status = 'error', error_details = %(error)s, next_attempt_at = NULL, updated_at = now()
 WHERE id = %(id)s AND processing_status = 'received';

-- name: transcription_stuck
SELECT id,
       CASE WHEN attempt_stage = 'transcription' THEN attempts ELSE 0 END AS attempts,
       error_details
  FROM meeting_notes
 WHERE processing_status = 'stored'
   AND transcription_status = 'pending'
   AND updated_at < now() - make_interval(secs => %(grace)s)
   AND (NOT %(due)s OR attempt_stage IS DISTINCT FROM 'transcription'
        OR next_attempt_at IS NULL OR next_attempt_at <= now())
   AND (%(ids)s::bigint[] IS NULL OR id = ANY(%(ids)s::bigint[]))
 ORDER BY id
 LIMIT %(limit)s;

-- name: transcription_attempt
UPDATE meeting_notes
   SET attempts = CASE WHEN attempt_stage = 'transcription' THEN attempts + 1 ELSE 1 END,
       attempt_stage = 'transcription',
       next_attempt_at = now() + make_interval(secs => %(delay)s)
 WHERE id = %(id)s AND processing_status = 'stored' AND transcription_status = 'pending'
RETURNING attempts;

-- name: transcription_give_up
UPDATE meeting_notes
   SET transcription_status = 'failed', error_details = %(error)s, next_attempt_at = NULL, updated_at = now()
 WHERE id = %(id)s AND processing_status = 'stored' AND transcription_status = 'pending';

-- name: classification_stuck
SELECT id,
       CASE WHEN attempt_stage = 'classification' THEN attempts ELSE 0 END AS attempts,
       error_details
  FROM meeting_notes
 WHERE processing_status = 'stored'
   AND classification_status = 'pending'
   AND transcription_status <> 'pending'
   AND updated_at < now() - make_interval(secs => %(grace)s)
   AND (NOT %(due)s OR attempt_stage IS DISTINCT FROM 'classification'
        OR next_attempt_at IS NULL OR next_attempt_at <= now())
   AND (%(ids)s::bigint[] IS NULL OR id = ANY(%(ids)s::bigint[]))
 ORDER BY id
 LIMIT %(limit)s;

-- name: classification_attempt
UPDATE meeting_notes
   SET attempts = CASE WHEN attempt_stage = 'classification' THEN attempts + 1 ELSE 1 END,
       attempt_stage = 'classification',
       next_attempt_at = now() + make_interval(secs => %(delay)s)
 WHERE id = %(id)s AND processing_status = 'stored' AND classification_status = 'pending'
   AND transcription_status <> 'pending'
RETURNING attempts;

-- name: classification_give_up
UPDATE meeting_notes
   SET classification_status = 'failed', error_details = %(error)s, next_attempt_at = NULL, updated_at = now()
 WHERE id = %(id)s AND processing_status = 'stored' AND classification_status = 'pending';

-- An update waits for its message: it is archived beside it.
-- name: update_stuck
SELECT u.id, u.attempts, u.error_details
  FROM message_updates u
  JOIN meeting_notes n ON n.id = u.meeting_note_id
 WHERE u.processing_status = 'received'
   AND n.processing_status = 'stored'
   AND u.updated_at < now() - make_interval(secs => %(grace)s)
   AND (NOT %(due)s OR u.next_attempt_at IS NULL OR u.next_attempt_at <= now())
   AND (%(ids)s::bigint[] IS NULL OR u.id = ANY(%(ids)s::bigint[]))
 ORDER BY u.id
 LIMIT %(limit)s;

-- name: update_attempt
UPDATE message_updates
   SET attempts = attempts + 1, next_attempt_at = now() + make_interval(secs => %(delay)s)
 WHERE id = %(id)s AND processing_status = 'received'
RETURNING attempts;

-- name: update_give_up
UPDATE message_updates
   SET processing_status = 'error', error_details = %(error)s, next_attempt_at = NULL, updated_at = now()
 WHERE id = %(id)s AND processing_status = 'received';

-- An archived version of our own message carrying an answer or a refusal, not yet handed to the
-- order flow (next_attempt_at served the archive stage before; it is free once stored).
-- name: update_classification_stuck
SELECT id, classification_attempts AS attempts, error_details
  FROM message_updates
 WHERE processing_status = 'stored'
   AND classification_status = 'pending'
   AND updated_at < now() - make_interval(secs => %(grace)s)
   AND (NOT %(due)s OR next_attempt_at IS NULL OR next_attempt_at <= now())
   AND (%(ids)s::bigint[] IS NULL OR id = ANY(%(ids)s::bigint[]))
 ORDER BY id
 LIMIT %(limit)s;

-- name: update_classification_attempt
UPDATE message_updates
   SET classification_attempts = classification_attempts + 1,
       next_attempt_at = now() + make_interval(secs => %(delay)s)
 WHERE id = %(id)s AND processing_status = 'stored' AND classification_status = 'pending'
RETURNING classification_attempts AS attempts;

-- name: update_classification_give_up
UPDATE message_updates
   SET classification_status = 'failed', error_details = %(error)s, next_attempt_at = NULL, updated_at = now()
 WHERE id = %(id)s AND processing_status = 'stored' AND classification_status = 'pending';

-- A 'sending' row may have left (the send job then checks the conversation before sending
-- again), so it waits longer: %(grace)s is the job timeout plus the grace period for it.
-- name: outbox_stuck
SELECT id, requeue_attempts AS attempts, error_details
  FROM outbox
 WHERE status = ANY(%(statuses)s::text[])
   AND updated_at < now() - make_interval(secs => %(grace)s)
   AND (NOT %(due)s OR next_attempt_at IS NULL OR next_attempt_at <= now())
   AND (%(ids)s::bigint[] IS NULL OR id = ANY(%(ids)s::bigint[]))
 ORDER BY id
 LIMIT %(limit)s;

-- name: outbox_attempt
UPDATE outbox
   SET requeue_attempts = requeue_attempts + 1,
       next_attempt_at = now() + make_interval(secs => %(delay)s)
 WHERE id = %(id)s AND status = ANY(%(statuses)s::text[])
RETURNING requeue_attempts AS attempts;

-- name: outbox_give_up
UPDATE outbox
   SET status = 'failed', error_details = %(error)s, next_attempt_at = NULL, updated_at = now()
 WHERE id = %(id)s AND status = ANY(%(statuses)s::text[]);

-- `flask requeue --status error`: the dead letter back to where it stopped, attempts from zero.
-- name: revive_archive
UPDATE meeting_notes
   SET processing_status = 'received', attempts = 0, attempt_stage = NULL, next_attempt_at = NULL,
       updated_at = now()
 WHERE processing_status = 'error'
   AND (%(ids)s::bigint[] IS NULL OR id = ANY(%(ids)s::bigint[]))
   AND (%(since)s::timestamptz IS NULL OR updated_at >= %(since)s::timestamptz)
RETURNING id;

-- name: revive_transcription
UPDATE meeting_notes
   SET transcription_status = 'pending', attempts = 0, attempt_stage = NULL, next_attempt_at = NULL,
       updated_at = now()
 WHERE processing_status = 'stored' AND transcription_status = 'failed'
   AND (%(ids)s::bigint[] IS NULL OR id = ANY(%(ids)s::bigint[]))
   AND (%(since)s::timestamptz IS NULL OR updated_at >= %(since)s::timestamptz)
RETURNING id;

-- name: revive_classification
UPDATE meeting_notes
   SET classification_status = 'pending', attempts = 0, attempt_stage = NULL, next_attempt_at = NULL,
       updated_at = now()
 WHERE processing_status = 'stored' AND classification_status = 'failed'
   AND (%(ids)s::bigint[] IS NULL OR id = ANY(%(ids)s::bigint[]))
   AND (%(since)s::timestamptz IS NULL OR updated_at >= %(since)s::timestamptz)
RETURNING id;

-- name: revive_update
UPDATE message_updates
   SET processing_status = 'received', attempts = 0, next_attempt_at = NULL, updated_at = now()
 WHERE processing_status = 'error'
   AND (%(ids)s::bigint[] IS NULL OR id = ANY(%(ids)s::bigint[]))
   AND (%(since)s::timestamptz IS NULL OR updated_at >= %(since)s::timestamptz)
RETURNING id;

-- A failed notice goes back to pending only when it never left: chatwoot_message_id is unset.
-- name: revive_outbox
UPDATE outbox
   SET status = 'pending', requeue_attempts = 0, next_attempt_at = NULL, updated_at = now()
 WHERE status = 'failed' AND chatwoot_message_id IS NULL
   AND (%(ids)s::bigint[] IS NULL OR id = ANY(%(ids)s::bigint[]))
   AND (%(since)s::timestamptz IS NULL OR updated_at >= %(since)s::timestamptz)
RETURNING id;

-- name: dead_letters
SELECT stage, id, chatwoot_account_id, chatwoot_conversation_id, attempts, error_details, updated_at
  FROM dead_letters
 WHERE (%(stage)s::text IS NULL OR stage = %(stage)s::text)
   AND (%(ids)s::bigint[] IS NULL OR id = ANY(%(ids)s::bigint[]))
   AND (%(since)s::timestamptz IS NULL OR updated_at >= %(since)s::timestamptz)
 ORDER BY updated_at DESC
 LIMIT %(limit)s;

-- name: dead_letter_counts
SELECT stage, count(*) AS n FROM dead_letters GROUP BY stage ORDER BY stage;

-- name: backlog
SELECT
  (SELECT count(*) FROM meeting_notes WHERE processing_status = 'received') AS archive,
  (SELECT count(*) FROM meeting_notes
    WHERE processing_status = 'stored' AND transcription_status = 'pending') AS transcription,
  (SELECT count(*) FROM meeting_notes
    WHERE processing_status = 'stored' AND classification_status = 'pending'
      AND transcription_status <> 'pending') AS classification,
  (SELECT count(*) FROM message_updates WHERE processing_status = 'received') AS update,
  (SELECT count(*) FROM outbox WHERE status IN ('pending', 'sending')) AS outbox;

-- Moves of a contact's archive into its user's bucket (app/users/rehome.py).
-- name: rehome_stuck
SELECT id, attempts, error_details
  FROM rehome_requests
 WHERE status = 'pending'
   AND updated_at < now() - make_interval(secs => %(grace)s)
   AND (NOT %(due)s OR next_attempt_at IS NULL OR next_attempt_at <= now())
   AND (%(ids)s::bigint[] IS NULL OR id = ANY(%(ids)s::bigint[]))
 ORDER BY id
 LIMIT %(limit)s;

-- name: rehome_attempt
UPDATE rehome_requests
   SET attempts = attempts + 1,
       next_attempt_at = now() + make_interval(secs => %(delay)s)
 WHERE id = %(id)s AND status = 'pending'
RETURNING attempts;

-- name: rehome_give_up
UPDATE rehome_requests
   SET status = 'error', error_details = %(error)s, next_attempt_at = NULL, updated_at = now()
 WHERE id = %(id)s AND status = 'pending';
