-- Exports of a user's archive (migrations/0019, app/records/exports.py).

-- name: export_insert
INSERT INTO exports (user_id, requested_by, bucket_name)
VALUES (%(user_id)s, %(requested_by)s, %(bucket_name)s)
RETURNING id;

-- name: export_event
INSERT INTO export_events (export_id, event, actor, detail)
VALUES (%(export_id)s, %(event)s, %(actor)s, %(detail)s);

-- name: export_get
SELECT e.id, e.user_id, e.status, e.requested_by, e.requested_at, e.attempts, e.bucket_name,
       e.object_name, e.size_bytes, e.sha256, e.summary, e.error_details, e.started_at,
       e.finished_at, e.expires_at, e.deleted_at
FROM exports e
WHERE e.id = %(export_id)s;

-- name: export_events_of
SELECT event, actor, at, detail FROM export_events WHERE export_id = %(export_id)s ORDER BY at, id;

-- name: exports_of_user
SELECT id, user_id, status, requested_by, requested_at, object_name, size_bytes, sha256,
       finished_at, expires_at, deleted_at, error_details,
       (summary #>> '{counts,messages}')::bigint AS messages, (summary #>> '{counts,files}')::bigint AS files
FROM exports
WHERE user_id = %(user_id)s
ORDER BY id DESC
LIMIT %(limit)s;

-- A run of the export job takes the row (a finished or deleted export is left as it is).
-- name: export_start
UPDATE exports
SET status = 'running', attempts = attempts + 1, started_at = now(), error_details = NULL,
    updated_at = now()
WHERE id = %(export_id)s AND status IN ('pending', 'running', 'failed')
RETURNING id, user_id, bucket_name, attempts, requested_by;

-- name: export_done
UPDATE exports
SET status = 'done', object_name = %(object_name)s, size_bytes = %(size_bytes)s, sha256 = %(sha256)s,
    summary = %(summary)s, finished_at = now(), expires_at = now() + make_interval(days => %(keep_days)s),
    updated_at = now()
WHERE id = %(export_id)s AND status = 'running'
RETURNING id;

-- name: export_failed
UPDATE exports
SET status = 'failed', error_details = %(error_details)s, updated_at = now()
WHERE id = %(export_id)s AND status = 'running';

-- name: export_deleted
UPDATE exports
SET status = 'deleted', deleted_at = now(), updated_at = now()
WHERE id = %(export_id)s AND status <> 'deleted'
RETURNING id;

-- Finished exports past their time, of users not on legal hold.
-- name: exports_expired
SELECT e.id, e.user_id
FROM exports e
WHERE e.status = 'done' AND e.expires_at < now()
  AND NOT EXISTS (SELECT 1 FROM legal_holds h WHERE h.user_id = e.user_id AND h.lifted_at IS NULL)
ORDER BY e.expires_at
LIMIT %(limit)s;

-- name: exports_expired_on_hold
SELECT count(*) AS n
FROM exports e
WHERE e.status = 'done' AND e.expires_at < now()
  AND EXISTS (SELECT 1 FROM legal_holds h WHERE h.user_id = e.user_id AND h.lifted_at IS NULL);

-- Everything of a user's archive, messages and their updates, in time order (read through a
-- server-side cursor, inside one snapshot).
-- name: export_items
SELECT i.*
FROM (
    SELECT 'message' AS kind, n.id AS note_id, NULL::bigint AS update_id,
           coalesce(n.message_created_at, n.created_at) AS at,
           n.chatwoot_account_id, n.chatwoot_message_id, n.chatwoot_conversation_id,
           n.chatwoot_inbox_id, n.chatwoot_contact_id, n.source_type, n.message_type,
           n.content_type, n.content, n.is_private, n.sender_type, n.message_created_at,
           n.created_at, n.processing_status, n.transcription_status, n.transcript,
           n.message_kind, n.gcs_storage_path, t.gcs_storage_path AS transcript_path,
           (SELECT coalesce(jsonb_agg(jsonb_build_object(
                        'id', a.chatwoot_attachment_id, 'file_type', a.file_type,
                        'content_type', a.content_type, 'size_bytes', a.size_bytes,
                        'bucket', a.bucket_name, 'object', a.object_name, 'status', a.status)
                    ORDER BY a.chatwoot_attachment_id), '[]'::jsonb)
              FROM message_attachments a WHERE a.meeting_note_id = n.id) AS attachments
      FROM meeting_notes n
      LEFT JOIN transcriptions t ON t.meeting_note_id = n.id
     WHERE n.user_id = %(user_id)s
    UNION ALL
    SELECT 'update', u.meeting_note_id, u.id, u.created_at,
           n.chatwoot_account_id, n.chatwoot_message_id, n.chatwoot_conversation_id,
           n.chatwoot_inbox_id, n.chatwoot_contact_id, n.source_type, n.message_type,
           NULL, NULL, NULL, NULL, NULL, u.created_at, u.processing_status, NULL, NULL, NULL,
           u.gcs_storage_path, NULL, '[]'::jsonb
      FROM message_updates u
      JOIN meeting_notes n ON n.id = u.meeting_note_id
     WHERE n.user_id = %(user_id)s
) i
ORDER BY i.at, i.note_id, i.update_id NULLS FIRST;

-- What was received, for a message or update whose archived copy cannot be read.
-- name: export_note_payload
SELECT coalesce(archive_payload, payload) AS payload FROM meeting_notes WHERE id = %(id)s;

-- name: export_update_payload
SELECT payload FROM message_updates WHERE id = %(id)s;

-- Exports whose job may have been lost (Redis was down, a worker died).
-- name: exports_unfinished
SELECT id FROM exports
WHERE status IN ('pending', 'running') AND updated_at < now() - make_interval(secs => %(grace_seconds)s)
ORDER BY id
LIMIT %(limit)s;
