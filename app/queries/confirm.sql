-- The yes/no question about a message that looks like a request for content without saying so.

-- name: note_decide
-- The answer (or its timeout) decides what the undecided message is: an order or a note.
UPDATE meeting_notes
SET message_kind = %(kind)s, updated_at = now()
WHERE id = %(id)s AND message_kind IS NULL AND classification_status = 'done'
RETURNING id;

-- name: confirmations_expired
SELECT chatwoot_account_id, chatwoot_conversation_id FROM conversations
WHERE context_json ? 'confirmation'
  AND (context_json #>> '{confirmation,asked_at}')::timestamptz < %(cutoff)s
ORDER BY updated_at
LIMIT %(limit)s;
