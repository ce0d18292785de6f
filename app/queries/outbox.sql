-- Every message sent to Chatwoot: recorded with a unique key before it is sent.

-- name: message_insert
INSERT INTO outbox
    (dedupe_key, chatwoot_account_id, chatwoot_conversation_id, kind, order_id, body, template_values)
VALUES (%(dedupe_key)s, %(account_id)s, %(conversation_id)s, %(kind)s, %(order_id)s, %(body)s,
        %(template_values)s)
ON CONFLICT (dedupe_key) DO NOTHING
RETURNING id;

-- name: message_get
SELECT * FROM outbox WHERE id = %(id)s;

-- name: get_by_key
SELECT * FROM outbox WHERE dedupe_key = %(dedupe_key)s;

-- name: find_by_message
-- Our message with this Chatwoot id in a conversation (what a quick-reply answer points at).
SELECT * FROM outbox
WHERE chatwoot_account_id = %(account_id)s
  AND chatwoot_conversation_id = %(conversation_id)s
  AND chatwoot_message_id = %(message_id)s;

-- name: message_claim
-- The attempt starts: from here on the request may reach Chatwoot.
UPDATE outbox
SET status = 'sending', attempts = attempts + 1, first_attempt_at = COALESCE(first_attempt_at, now()),
    last_attempt_at = now(), updated_at = now()
WHERE id = %(id)s AND status IN ('pending', 'sending')
RETURNING *;

-- name: mark_sent
UPDATE outbox
SET status = 'sent', chatwoot_message_id = %(message_id)s, sent_at = now(), error_details = NULL,
    updated_at = now()
WHERE id = %(id)s AND status IN ('pending', 'sending')
RETURNING *;

-- name: mark_pending
-- The request did not reach Chatwoot (or was refused before being applied): safe to send again.
UPDATE outbox SET status = 'pending', error_details = %(reason)s, updated_at = now()
WHERE id = %(id)s AND status IN ('pending', 'sending');

-- name: mark_unknown
-- The request may have been applied: the next attempt looks at the conversation first.
UPDATE outbox SET status = 'sending', error_details = %(reason)s, updated_at = now()
WHERE id = %(id)s AND status IN ('pending', 'sending');

-- name: mark_final
-- failed, not_sent or no_template, with the reason.
UPDATE outbox SET status = %(status)s, error_details = %(reason)s, updated_at = now()
WHERE id = %(id)s AND status IN ('pending', 'sending')
RETURNING *;

-- name: conversation_window
SELECT can_reply, source_type, last_incoming_at FROM conversations
WHERE chatwoot_account_id = %(account_id)s AND chatwoot_conversation_id = %(conversation_id)s;

-- name: use_template
-- The 24-hour window is closed: the notice goes out as the account's WhatsApp template.
UPDATE outbox SET body = %(body)s, updated_at = now()
WHERE id = %(id)s AND status IN ('pending', 'sending')
RETURNING *;

-- name: mark_refused
-- The channel refused a message Chatwoot had accepted (an update of our message carrying
-- content_attributes.external_error). Its Chatwoot id is kept: such a row is never sent again.
UPDATE outbox
SET status = 'failed', refused_at = now(), error_details = %(reason)s,
    chatwoot_message_id = COALESCE(chatwoot_message_id, %(message_id)s), updated_at = now()
WHERE id = %(id)s AND status IN ('pending', 'sending', 'sent')
RETURNING *;
