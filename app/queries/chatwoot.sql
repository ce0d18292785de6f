-- What Chatwoot has shown of itself: which read tokens it refuses, and our own messages echoed
-- back by its webhooks.

-- name: read_access_get
SELECT * FROM chatwoot_read_access WHERE chatwoot_account_id = %(account_id)s;

-- `changed` is true when the account's state is new: another token, or a token newly refused
-- or newly accepted (then it is said in the log, once).
-- name: read_access_record
INSERT INTO chatwoot_read_access AS r
    (chatwoot_account_id, token_fingerprint, token_source, can_read, detail)
VALUES (%(account_id)s, %(fingerprint)s, %(source)s, %(can_read)s, %(detail)s)
ON CONFLICT (chatwoot_account_id) DO UPDATE SET
    token_fingerprint = EXCLUDED.token_fingerprint,
    token_source = EXCLUDED.token_source,
    can_read = EXCLUDED.can_read,
    detail = EXCLUDED.detail,
    checked_at = now(),
    changed_at = CASE
        WHEN r.can_read IS DISTINCT FROM EXCLUDED.can_read
          OR r.token_fingerprint IS DISTINCT FROM EXCLUDED.token_fingerprint
        THEN now() ELSE r.changed_at END
RETURNING changed_at = checked_at AS changed;

-- name: read_access_refused
SELECT chatwoot_account_id, token_source, detail, checked_at FROM chatwoot_read_access
WHERE NOT can_read
ORDER BY chatwoot_account_id;

-- Our message, recognised by its outbox key, as Chatwoot's webhook brought it back.
-- name: outbox_echo
SELECT chatwoot_message_id FROM meeting_notes
WHERE chatwoot_account_id = %(account_id)s
  AND chatwoot_conversation_id = %(conversation_id)s
  AND created_at >= %(since)s
  AND message_type IN ('outgoing', 'template')
  AND payload -> 'content_attributes' ->> 'outbox_key' = %(key)s
LIMIT 1;

-- A conversation of the account we have a message of, the most recent (`flask chatwoot check`).
-- name: recent_conversation
SELECT chatwoot_conversation_id FROM meeting_notes
WHERE chatwoot_account_id = %(account_id)s AND chatwoot_conversation_id IS NOT NULL
ORDER BY created_at DESC
LIMIT 1;
