-- The archive job and the buckets it knows.

-- name: bucket_get
SELECT bucket_name, state, how, project_number, error_details
FROM gcs_buckets
WHERE bucket_name = %(bucket_name)s;

-- name: bucket_record
INSERT INTO gcs_buckets (bucket_name, state, how, project_number, error_details)
VALUES (%(bucket_name)s, %(state)s, %(how)s, %(project_number)s, %(error_details)s)
ON CONFLICT (bucket_name) DO UPDATE
SET state = EXCLUDED.state,
    how = EXCLUDED.how,
    project_number = COALESCE(EXCLUDED.project_number, gcs_buckets.project_number),
    error_details = EXCLUDED.error_details,
    updated_at = now();

-- name: bucket_forget
DELETE FROM gcs_buckets WHERE bucket_name = %(bucket_name)s;

-- The project number GCS put on a bucket we created: ours.
-- name: bucket_own_project_number
SELECT project_number
FROM gcs_buckets
WHERE how = 'created' AND project_number IS NOT NULL
ORDER BY created_at
LIMIT 1;

-- name: user_bucket_created
UPDATE user_bucket_mapping
SET bucket_created_at = COALESCE(bucket_created_at, now()), updated_at = now()
WHERE bucket_name = %(bucket_name)s AND bucket_created_at IS NULL;

-- Everything the job needs of the messages a batch took (app/archive/batch.py), in one round
-- trip: the rows, their attachments so far, and who owns each (the row's user, else the user its
-- contact is linked to: contact_user(), migrations/0009). The payload comes as text, archived as
-- it is (no parsing and writing again): what Chatwoot sent, secrets removed (archive_payload,
-- when the stored row is a trimmed copy), with the few parts of it the job reads. Prepared once
-- per connection (planning it costs more than running it); run with execute_load_notes.
-- name: prepare_load_notes
PREPARE archive_load_notes (bigint[]) AS
SELECT note.id, note.chatwoot_account_id, note.chatwoot_message_id, note.chatwoot_contact_id,
       note.user_id, note.message_type, note.processing_status, note.transcription_status,
       note.classification_status, note.message_created_at, note.created_at,
       COALESCE(note.archive_payload, note.payload)::text AS payload_json,
       CASE WHEN jsonb_typeof(note.payload -> 'attachments') = 'array'
            THEN note.payload -> 'attachments' END AS attachments,
       note.payload ->> 'id' AS payload_message_id,
       note.payload -> 'account' ->> 'id' AS payload_account_id,
       note.gcs_storage_path, note.error_details, note.contact_phone, note.contact_identifier,
       owner.bucket_name AS owner_bucket_name,
       link.user_id AS linked_user_id,
       link.bucket_name AS linked_bucket_name,
       COALESCE(
           (SELECT jsonb_agg(to_jsonb(a)) FROM message_attachments a WHERE a.meeting_note_id = note.id),
           '[]'::jsonb
       ) AS attachment_rows
FROM meeting_notes note
LEFT JOIN user_bucket_mapping owner ON owner.user_id = note.user_id
LEFT JOIN LATERAL contact_user(
    note.chatwoot_account_id, note.chatwoot_contact_id::text, note.contact_identifier, note.contact_phone
) link ON true
WHERE note.id = ANY($1);
-- name: execute_load_notes
EXECUTE archive_load_notes (%(ids)s::bigint[]);

-- An attachment's outcome; a stored attachment is never changed again.
-- name: attachment_save
INSERT INTO message_attachments (
    meeting_note_id, chatwoot_attachment_id, file_type, content_type, size_bytes,
    bucket_name, object_name, status, error_details, stored_at
)
VALUES (
    %(note_id)s, %(attachment_id)s, %(file_type)s, %(content_type)s, %(size_bytes)s,
    %(bucket_name)s, %(object_name)s, %(status)s, %(error_details)s,
    CASE WHEN %(status)s = 'stored' THEN now() END
)
ON CONFLICT (meeting_note_id, chatwoot_attachment_id) DO UPDATE
SET file_type = EXCLUDED.file_type,
    content_type = COALESCE(EXCLUDED.content_type, message_attachments.content_type),
    size_bytes = COALESCE(EXCLUDED.size_bytes, message_attachments.size_bytes),
    bucket_name = COALESCE(EXCLUDED.bucket_name, message_attachments.bucket_name),
    object_name = COALESCE(EXCLUDED.object_name, message_attachments.object_name),
    status = EXCLUDED.status,
    error_details = EXCLUDED.error_details,
    stored_at = COALESCE(message_attachments.stored_at, EXCLUDED.stored_at),
    updated_at = now()
WHERE message_attachments.status <> 'stored';

-- The row moves forward only: 'received' (or 'error', on a later retry) to 'stored'. Returns what
-- comes next, and the updates that were waiting for the message to be archived.
-- Prepared once per connection; run with execute_mark_stored.
-- name: prepare_mark_stored
PREPARE archive_mark_stored (bigint, text, text, text) AS
UPDATE meeting_notes n
SET processing_status = 'stored',
    user_id = $2,
    gcs_storage_path = $3,
    stored_at = COALESCE(n.stored_at, now()),
    error_details = $4,
    archive_payload = NULL,
    updated_at = now()
WHERE n.id = $1 AND n.processing_status IN ('received', 'error')
RETURNING n.transcription_status, n.classification_status,
          ARRAY(SELECT u.id FROM message_updates u
                WHERE u.meeting_note_id = n.id AND u.processing_status = 'received'
                ORDER BY u.id) AS waiting_updates;
-- name: execute_mark_stored
EXECUTE archive_mark_stored (%(note_id)s, %(user_id)s, %(path)s, %(error_details)s);

-- The same for several messages at once (one statement, one commit).
-- name: mark_stored_many
UPDATE meeting_notes n
SET processing_status = 'stored',
    user_id = v.user_id,
    gcs_storage_path = v.path,
    stored_at = COALESCE(n.stored_at, now()),
    error_details = v.error_details,
    archive_payload = NULL,
    updated_at = now()
FROM unnest(%(ids)s::bigint[], %(user_ids)s::text[], %(paths)s::text[], %(errors)s::text[])
     AS v(id, user_id, path, error_details)
WHERE n.id = v.id AND n.processing_status IN ('received', 'error')
RETURNING n.id, n.transcription_status, n.classification_status,
          ARRAY(SELECT u.id FROM message_updates u
                WHERE u.meeting_note_id = n.id AND u.processing_status = 'received'
                ORDER BY u.id) AS waiting_updates;

-- Final failure (GCS, the database, a bucket of another project). The JSON may be archived
-- already: then the row says where, and whose it is.
-- name: mark_error
UPDATE meeting_notes
SET processing_status = 'error',
    error_details = %(error_details)s,
    user_id = COALESCE(%(user_id)s, user_id),
    gcs_storage_path = COALESCE(%(path)s, gcs_storage_path),
    updated_at = now()
WHERE id = %(note_id)s AND processing_status IN ('received', 'error');

-- name: attachments_unavailable
UPDATE message_attachments
SET status = 'unavailable', updated_at = now()
WHERE meeting_note_id = %(note_id)s AND status = 'pending';

-- An admin's retry of the attachments that could not be fetched (all, or one): back to pending.
-- name: attachments_retry
UPDATE message_attachments a
SET status = 'pending', error_details = NULL, updated_at = now()
FROM meeting_notes n
WHERE n.id = a.meeting_note_id AND a.meeting_note_id = %(note_id)s
  AND a.status = 'unavailable'
  AND (%(attachment_id)s::bigint IS NULL OR a.chatwoot_attachment_id = %(attachment_id)s::bigint)
RETURNING a.chatwoot_attachment_id;

-- The message and the attachments a retry job fetches.
-- name: attachments_pending
SELECT n.id, n.chatwoot_account_id, n.chatwoot_message_id, n.processing_status,
       n.transcription_status, n.payload, n.gcs_storage_path,
       COALESCE(
           (SELECT jsonb_agg(to_jsonb(a)) FROM message_attachments a WHERE a.meeting_note_id = n.id),
           '[]'::jsonb
       ) AS attachment_rows
FROM meeting_notes n
WHERE n.id = %(note_id)s;

-- name: note_exists
SELECT id, processing_status FROM meeting_notes WHERE id = %(note_id)s;

-- An audio attachment archived after a transcription that had none: transcribe again.
-- name: transcription_again
UPDATE meeting_notes
SET transcription_status = 'pending', attempts = 0, attempt_stage = NULL, next_attempt_at = NULL,
    error_details = NULL, updated_at = now()
WHERE id = %(note_id)s AND processing_status = 'stored' AND transcription_status = 'failed';

-- A failed run that RQ will retry: the row stays 'received' and says why.
-- name: note_retrying
UPDATE meeting_notes
SET error_details = %(error_details)s, updated_at = now()
WHERE id = %(note_id)s AND processing_status = 'received';

-- name: load_update
SELECT u.id, u.meeting_note_id, u.fingerprint, u.payload, u.processing_status,
       n.processing_status AS note_status, n.gcs_storage_path AS note_path
FROM message_updates u
JOIN meeting_notes n ON n.id = u.meeting_note_id
WHERE u.id = %(update_id)s;

-- name: update_stored
UPDATE message_updates
SET processing_status = 'stored', gcs_storage_path = %(path)s, error_details = NULL, updated_at = now()
WHERE id = %(update_id)s AND processing_status IN ('received', 'error')
RETURNING classification_status;

-- name: update_error
UPDATE message_updates
SET processing_status = 'error', error_details = %(error_details)s, updated_at = now()
WHERE id = %(update_id)s AND processing_status IN ('received', 'error');

-- name: update_retrying
UPDATE message_updates
SET error_details = %(error_details)s, updated_at = now()
WHERE id = %(update_id)s AND processing_status = 'received';
