-- Ingestion: the one deduplicated write of a Chatwoot message (webhook, spool replay, backfill).
-- (Comments stand above each `-- name:` line so that they are not sent with the query.)

-- prepare_record: prepared once per connection (parsing and planning this statement cost more
-- than running it). One statement, run as its own transaction: one round trip. It inserts the
-- message when it is new; when it is already there and this version of what we keep (the
-- fingerprint, $14) is new, it appends it to message_updates. A row committed by a concurrent
-- request after this statement began is not visible to `existing`: then all three ids are NULL
-- and the caller runs it again. `existing` is looked up only when the insert did nothing (a
-- one-time filter: no index probe for a new message). With $17, the payload is the text as
-- received and the statement removes its one secret, conversation.contact_inbox.pubsub_token.
-- An update is classified ($16) only when it is a version of our own message (the web widget's
-- answer, the channel's refusal): a new version of a contact's message is not classified again.
-- $21 holds the contact's erasure keys (app/users/tombstones.py): a contact with a tombstone gets
-- nothing stored, and `erased` says so (checked here, not by a query of its own: one round trip).
-- name: prepare_record
PREPARE ingest_record (
    jsonb, integer, text, integer, integer, integer, text, text, text, text, boolean, text,
    timestamptz, text, text, text, boolean, text, text, jsonb, text[]
) AS
WITH input AS (
    SELECT CASE WHEN $17 THEN $1 #- '{conversation,contact_inbox,pubsub_token}' ELSE $1 END AS payload
), erased AS (
    SELECT FROM erased_contacts WHERE chatwoot_account_id = $2 AND key_hash = ANY($21) LIMIT 1
), note AS (
    INSERT INTO meeting_notes (
        chatwoot_account_id, chatwoot_message_id, chatwoot_conversation_id, chatwoot_inbox_id,
        chatwoot_contact_id, source_type, message_type, content_type, content, is_private,
        sender_type, message_created_at, payload, content_fingerprint, processing_status,
        transcription_status, classification_status, contact_phone, contact_identifier, archive_payload
    )
    SELECT $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, input.payload, $14, 'received', $15, $16,
        $18, $19, $20
    FROM input
    WHERE NOT EXISTS (SELECT FROM erased)
    ON CONFLICT (chatwoot_account_id, chatwoot_message_id) DO NOTHING
    RETURNING id
), existing AS (
    SELECT id, content_fingerprint FROM meeting_notes
    WHERE chatwoot_account_id = $2 AND chatwoot_message_id = $3 AND NOT EXISTS (SELECT FROM note)
        AND NOT EXISTS (SELECT FROM erased)
), change AS (
    INSERT INTO message_updates (meeting_note_id, fingerprint, payload, processing_status,
        classification_status)
    SELECT existing.id, $14, COALESCE($20, input.payload), 'received',
        CASE WHEN $8 = 'incoming' THEN 'not_needed' ELSE $16 END
    FROM existing, input
    WHERE existing.content_fingerprint IS DISTINCT FROM $14
    ON CONFLICT (meeting_note_id, fingerprint) DO NOTHING
    RETURNING id
)
SELECT (SELECT id FROM note) AS note_id,
    (SELECT id FROM existing) AS existing_id,
    (SELECT id FROM change) AS update_id,
    EXISTS (SELECT FROM erased) AS erased;

-- execute_record: the parameters in the order of prepare_record's.
-- name: execute_record
EXECUTE ingest_record (
    %(payload)s, %(account_id)s, %(message_id)s, %(conversation_id)s, %(inbox_id)s, %(contact_id)s,
    %(source_type)s, %(message_type)s, %(content_type)s, %(content)s, %(is_private)s,
    %(sender_type)s, %(message_created_at)s, %(fingerprint)s, %(transcription_status)s,
    %(classification_status)s, %(strip_token)s, %(contact_phone)s, %(contact_identifier)s,
    %(archive_payload)s, %(erased_keys)s::text[]
);
