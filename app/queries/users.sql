-- Users, the Chatwoot contacts linked to them, and re-homing of archived messages.

-- The user a contact is linked to (the rule is contact_user(), migrations/0009).
-- name: find_link
SELECT user_id, bucket_name, link_type
FROM contact_user(%(account_id)s, %(contact_id)s, %(identifier)s, %(phone)s);

-- name: user_get
SELECT user_id, bucket_name, notify_on_ready, display_name, language, bucket_created_at, created_at
FROM user_bucket_mapping
WHERE user_id = %(user_id)s;

-- name: user_create
INSERT INTO user_bucket_mapping (user_id, bucket_name, display_name, language)
VALUES (%(user_id)s, %(bucket_name)s, %(display_name)s, %(language)s)
ON CONFLICT (user_id) DO UPDATE
SET display_name = COALESCE(EXCLUDED.display_name, user_bucket_mapping.display_name),
    language = COALESCE(EXCLUDED.language, user_bucket_mapping.language),
    updated_at = CASE
        WHEN EXCLUDED.display_name IS NULL AND EXCLUDED.language IS NULL THEN user_bucket_mapping.updated_at
        ELSE now()
    END
RETURNING user_id, bucket_name, (xmax = 0) AS created;

-- name: link_get
SELECT id, user_id, chatwoot_account_id, link_type, link_value
FROM contact_links
WHERE chatwoot_account_id = %(account_id)s AND link_type = %(link_type)s AND link_value = %(link_value)s;

-- name: link_insert
INSERT INTO contact_links (user_id, chatwoot_account_id, link_type, link_value)
VALUES (%(user_id)s, %(account_id)s, %(link_type)s, %(link_value)s)
ON CONFLICT (chatwoot_account_id, link_type, link_value) DO NOTHING
RETURNING id;

-- name: link_move
UPDATE contact_links
SET user_id = %(user_id)s
WHERE chatwoot_account_id = %(account_id)s AND link_type = %(link_type)s AND link_value = %(link_value)s;

-- name: links_of_user
SELECT link_type, link_value
FROM contact_links
WHERE user_id = %(user_id)s AND chatwoot_account_id = %(account_id)s;

-- Archived messages of an account with no user yet (their objects are in the account's bucket).
-- name: unmapped_archived_notes
SELECT id, chatwoot_message_id, chatwoot_contact_id, message_created_at, created_at,
       gcs_storage_path, contact_phone, contact_identifier
FROM meeting_notes
WHERE chatwoot_account_id = %(account_id)s
  AND user_id IS NULL
  AND gcs_storage_path IS NOT NULL
  AND id > %(after_id)s
ORDER BY id
LIMIT %(limit)s;

-- Messages of a user whose move was recorded but whose old copies are not all deleted yet.
-- name: rehome_unfinished
SELECT id, chatwoot_message_id, message_created_at, created_at, gcs_storage_path, rehome_from_bucket
FROM meeting_notes
WHERE user_id = %(user_id)s AND rehome_from_bucket IS NOT NULL
ORDER BY id;

-- The copies are in the user's bucket: point the row, its attachments, updates and transcript
-- at them, and remember the bucket still to be emptied of this message.
-- name: rehome_record_note
UPDATE meeting_notes
SET user_id = %(user_id)s,
    gcs_storage_path = %(path)s,
    rehome_from_bucket = %(from_bucket)s,
    updated_at = now()
WHERE id = %(note_id)s AND (user_id IS NULL OR user_id = %(user_id)s);

-- name: rehome_record_attachments
UPDATE message_attachments
SET bucket_name = %(to_bucket)s, updated_at = now()
WHERE meeting_note_id = %(note_id)s AND bucket_name = %(from_bucket)s;

-- name: rehome_record_updates
UPDATE message_updates
SET gcs_storage_path = 'gs://' || %(to_bucket)s || substr(gcs_storage_path, length('gs://' || %(from_bucket)s) + 1),
    updated_at = now()
WHERE meeting_note_id = %(note_id)s AND starts_with(gcs_storage_path, 'gs://' || %(from_bucket)s || '/');

-- name: rehome_record_transcript
UPDATE transcriptions
SET gcs_storage_path = 'gs://' || %(to_bucket)s || substr(gcs_storage_path, length('gs://' || %(from_bucket)s) + 1),
    updated_at = now()
WHERE meeting_note_id = %(note_id)s AND starts_with(gcs_storage_path, 'gs://' || %(from_bucket)s || '/');

-- name: rehome_done
UPDATE meeting_notes
SET rehome_from_bucket = NULL, updated_at = now()
WHERE id = %(note_id)s AND rehome_from_bucket = %(from_bucket)s;

-- A move to do (one pending request per account and user; asking again only touches it).
-- name: rehome_request
INSERT INTO rehome_requests (chatwoot_account_id, user_id)
VALUES (%(account_id)s, %(user_id)s)
ON CONFLICT (chatwoot_account_id, user_id) WHERE status = 'pending'
DO UPDATE SET updated_at = now()
RETURNING id;

-- name: rehome_request_get
SELECT id, chatwoot_account_id, user_id, status, attempts FROM rehome_requests WHERE id = %(id)s;

-- name: rehome_request_done
UPDATE rehome_requests
SET status = 'done', messages_moved = %(messages)s, error_details = NULL, next_attempt_at = NULL,
    updated_at = now()
WHERE id = %(id)s AND status = 'pending';
