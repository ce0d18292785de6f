-- Ingestion: the one deduplicated write of a Chatwoot message (webhook, spool replay, backfill).

-- record: one statement, run as its own transaction: one round trip. Inserts the message when
-- it is new; when it is already there and this version of what we keep (the fingerprint) is
-- new, appends it to message_updates. A row committed by a concurrent request after this
-- statement began is not visible to `existing`: then all three ids are NULL and the caller
-- runs it again. (Comments stand above the name so that they are not sent with the query.)
-- name: record
WITH input AS (
    SELECT %(payload)s::jsonb AS payload
), note AS (
    INSERT INTO meeting_notes (
        chatwoot_account_id, chatwoot_message_id, chatwoot_conversation_id, chatwoot_inbox_id,
        chatwoot_contact_id, source_type, message_type, content_type, content, is_private,
        sender_type, message_created_at, payload, content_fingerprint, processing_status,
        transcription_status, classification_status
    )
    SELECT %(account_id)s::integer, %(message_id)s::text, %(conversation_id)s::integer,
        %(inbox_id)s::integer, %(contact_id)s::integer, %(source_type)s::text,
        %(message_type)s::text, %(content_type)s::text, %(content)s::text, %(is_private)s::boolean,
        %(sender_type)s::text, %(message_created_at)s::timestamptz, input.payload,
        %(fingerprint)s::text, 'received', %(transcription_status)s::text,
        %(classification_status)s::text
    FROM input
    ON CONFLICT (chatwoot_account_id, chatwoot_message_id) DO NOTHING
    RETURNING id
), existing AS (
    SELECT id, content_fingerprint FROM meeting_notes
    WHERE chatwoot_account_id = %(account_id)s::integer AND chatwoot_message_id = %(message_id)s::text
), change AS (
    INSERT INTO message_updates (meeting_note_id, fingerprint, payload, processing_status)
    SELECT existing.id, %(fingerprint)s::text, input.payload, 'received'
    FROM existing, input
    WHERE existing.content_fingerprint IS DISTINCT FROM %(fingerprint)s::text
    ON CONFLICT (meeting_note_id, fingerprint) DO NOTHING
    RETURNING id
)
SELECT (SELECT id FROM note) AS note_id,
    (SELECT id FROM existing) AS existing_id,
    (SELECT id FROM change) AS update_id;
