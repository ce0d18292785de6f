-- Classification of messages, conversations' clarification state, content orders.

-- name: note_get
SELECT * FROM meeting_notes WHERE id = %(id)s;

-- name: pending_in_conversation
-- Messages of one conversation waiting for classification, in the order they were written.
SELECT id, processing_status, transcription_status, created_at, message_created_at
FROM meeting_notes
WHERE chatwoot_account_id = %(account_id)s
  AND chatwoot_conversation_id = %(conversation_id)s
  AND classification_status = 'pending'
ORDER BY COALESCE(message_created_at, created_at), id
LIMIT 100;

-- name: note_classified
UPDATE meeting_notes
SET classification_status = %(status)s, message_kind = %(kind)s, updated_at = now()
WHERE id = %(id)s AND classification_status = 'pending'
RETURNING id;

-- name: note_classification_failed
UPDATE meeting_notes
SET classification_status = 'failed', error_details = %(reason)s, updated_at = now()
WHERE id = %(id)s AND classification_status = 'pending';

-- name: recent_notes
-- The author's recent notes (text or transcript), newest first: material for a draft.
SELECT id, COALESCE(NULLIF(content, ''), transcript) AS text, message_created_at
FROM meeting_notes
WHERE message_kind = 'note'
  AND COALESCE(NULLIF(content, ''), transcript) IS NOT NULL
  AND ((%(user_id)s::text IS NOT NULL AND user_id = %(user_id)s)
       OR (%(user_id)s::text IS NULL AND chatwoot_account_id = %(account_id)s
           AND chatwoot_contact_id = %(contact_id)s))
  AND created_at > now() - make_interval(days => %(days)s)
ORDER BY created_at DESC
LIMIT %(limit)s;

-- name: recent_note_count
SELECT count(*) AS notes
FROM meeting_notes
WHERE message_kind = 'note'
  AND ((%(user_id)s::text IS NOT NULL AND user_id = %(user_id)s)
       OR (%(user_id)s::text IS NULL AND chatwoot_account_id = %(account_id)s
           AND chatwoot_contact_id = %(contact_id)s))
  AND created_at > now() - make_interval(days => %(days)s);

-- name: conversation_upsert
INSERT INTO conversations AS c
    (chatwoot_account_id, chatwoot_conversation_id, chatwoot_contact_id, user_id, language,
     can_reply, source_type, last_incoming_at, last_message_at)
VALUES (%(account_id)s, %(conversation_id)s, %(contact_id)s, %(user_id)s, %(language)s,
        %(can_reply)s, %(source_type)s, %(message_at)s, %(message_at)s)
ON CONFLICT (chatwoot_account_id, chatwoot_conversation_id) DO UPDATE SET
    chatwoot_contact_id = COALESCE(EXCLUDED.chatwoot_contact_id, c.chatwoot_contact_id),
    user_id = COALESCE(EXCLUDED.user_id, c.user_id),
    language = COALESCE(EXCLUDED.language, c.language),
    can_reply = COALESCE(EXCLUDED.can_reply, c.can_reply),
    source_type = COALESCE(EXCLUDED.source_type, c.source_type),
    last_incoming_at = GREATEST(EXCLUDED.last_incoming_at, c.last_incoming_at),
    last_message_at = GREATEST(EXCLUDED.last_message_at, c.last_message_at),
    updated_at = now()
RETURNING *;

-- name: conversation_get
SELECT * FROM conversations
WHERE chatwoot_account_id = %(account_id)s AND chatwoot_conversation_id = %(conversation_id)s;

-- name: conversation_set_context
UPDATE conversations SET context_json = %(context)s, updated_at = now()
WHERE chatwoot_account_id = %(account_id)s AND chatwoot_conversation_id = %(conversation_id)s;

-- name: clarifications_expired
SELECT chatwoot_account_id, chatwoot_conversation_id FROM conversations
WHERE context_json ? 'clarification'
  AND (context_json #>> '{clarification,asked_at}')::timestamptz < %(cutoff)s
ORDER BY updated_at
LIMIT %(limit)s;

-- name: order_insert
INSERT INTO orders
    (chatwoot_account_id, chatwoot_conversation_id, chatwoot_contact_id, user_id,
     source_meeting_note_id, status, platform, length, tone, topic, subject, language)
VALUES (%(account_id)s, %(conversation_id)s, %(contact_id)s, %(user_id)s, %(note_id)s, %(status)s,
        %(platform)s, %(length)s, %(tone)s, %(topic)s, %(subject)s, %(language)s)
ON CONFLICT (source_meeting_note_id) DO NOTHING
RETURNING *;

-- name: order_by_note
SELECT * FROM orders WHERE source_meeting_note_id = %(note_id)s;

-- name: order_get
SELECT * FROM orders WHERE id = %(id)s;

-- name: order_set_fields
UPDATE orders
SET platform = %(platform)s, length = %(length)s, tone = %(tone)s, topic = %(topic)s, updated_at = now()
WHERE id = %(id)s AND status = 'clarifying'
RETURNING *;

-- name: order_move
-- Forward only: from one of the listed statuses to the next.
UPDATE orders
SET status = %(to)s,
    error_details = COALESCE(%(reason)s, error_details),
    cancelled_reason = CASE WHEN %(to)s = 'cancelled' THEN %(reason)s ELSE cancelled_reason END,
    updated_at = now()
WHERE id = %(id)s AND status = ANY(%(from)s)
RETURNING *;

-- name: order_mark_ready
UPDATE orders
SET status = 'ready', content = %(content)s, content_url = %(content_url)s, provider = %(provider)s,
    ready_at = now(), error_details = NULL, updated_at = now()
WHERE id = %(id)s AND status IN ('queued', 'generating')
RETURNING *;

-- name: order_delivered
UPDATE orders
SET delivered_at = now(), gcs_storage_path = COALESCE(%(path)s, gcs_storage_path), updated_at = now()
WHERE id = %(id)s AND status = 'ready' AND delivered_at IS NULL
RETURNING *;

-- name: orders_open_in_conversation
SELECT * FROM orders
WHERE chatwoot_account_id = %(account_id)s AND chatwoot_conversation_id = %(conversation_id)s
  AND status IN ('clarifying', 'waiting_for_contact', 'queued', 'generating')
ORDER BY id;

-- name: orders_list
-- For the main app: orders in one status, oldest first, with the request's own words.
SELECT o.*, COALESCE(NULLIF(n.content, ''), n.transcript) AS request_text
FROM orders o LEFT JOIN meeting_notes n ON n.id = o.source_meeting_note_id
WHERE o.status = %(status)s AND o.id > %(after_id)s
ORDER BY o.id
LIMIT %(limit)s;

-- name: order_with_request
SELECT o.*, COALESCE(NULLIF(n.content, ''), n.transcript) AS request_text
FROM orders o LEFT JOIN meeting_notes n ON n.id = o.source_meeting_note_id
WHERE o.id = %(id)s;

-- name: orders_undelivered
SELECT id FROM orders
WHERE status = 'ready' AND delivered_at IS NULL AND ready_at < now() - make_interval(secs => %(older_than)s)
ORDER BY id
LIMIT %(limit)s;

-- name: orders_stalled_queued
-- Orders the openai provider should be drafting but no job is working on.
SELECT id, chatwoot_account_id FROM orders
WHERE status IN ('queued', 'generating') AND updated_at < now() - make_interval(secs => %(older_than)s)
ORDER BY id
LIMIT %(limit)s;

-- name: user_set_notify
UPDATE user_bucket_mapping SET notify_on_ready = %(on)s, updated_at = now()
WHERE user_id = %(user_id)s
RETURNING *;

-- The contact of an order, as its message's row keeps it (the user is found by contact_user()).
-- name: order_contact
SELECT o.chatwoot_account_id AS account_id, o.chatwoot_contact_id AS contact_id,
       n.contact_phone AS phone, n.contact_identifier AS identifier
FROM orders o
LEFT JOIN meeting_notes n ON n.id = o.source_meeting_note_id
WHERE o.id = %(order_id)s;

-- name: lock_conversation
SELECT pg_try_advisory_lock(hashtextextended(%(key)s, 0)) AS locked;

-- name: unlock_conversation
SELECT pg_advisory_unlock(hashtextextended(%(key)s, 0)) AS unlocked;

-- A version of our own message carrying an answer or a refusal, with where its message lives.
-- name: update_get
SELECT u.id, u.payload, u.classification_status, n.chatwoot_account_id, n.chatwoot_conversation_id
FROM message_updates u
JOIN meeting_notes n ON n.id = u.meeting_note_id
WHERE u.id = %(id)s;

-- name: update_classified
UPDATE message_updates SET classification_status = %(status)s, updated_at = now()
WHERE id = %(id)s AND classification_status = 'pending'
RETURNING id;
