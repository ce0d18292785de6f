-- The Chatwoot backfill: which conversations to look at, and which listed messages are new.

-- Conversations with a message received within the window, with what the message list of
-- Chatwoot's API does not repeat (the channel, the inbox).
-- name: recent_conversations
SELECT chatwoot_account_id AS account_id,
       chatwoot_conversation_id AS conversation_id,
       (array_agg(source_type ORDER BY id DESC))[1] AS source_type,
       (array_agg(chatwoot_inbox_id ORDER BY id DESC) FILTER (WHERE chatwoot_inbox_id IS NOT NULL))[1]
           AS inbox_id,
       (array_agg(chatwoot_contact_id ORDER BY id DESC) FILTER (WHERE chatwoot_contact_id IS NOT NULL))[1]
           AS contact_id,
       (array_agg(payload #> '{conversation,meta,sender}' ORDER BY id DESC)
           FILTER (WHERE jsonb_typeof(payload #> '{conversation,meta,sender}') = 'object'))[1] AS contact,
       max(created_at) AS last_seen_at
  FROM meeting_notes
 WHERE created_at > now() - make_interval(secs => %(window)s)
   AND chatwoot_conversation_id IS NOT NULL
 GROUP BY chatwoot_account_id, chatwoot_conversation_id
 ORDER BY max(created_at) DESC
 LIMIT %(limit)s;

-- name: accounts
SELECT chatwoot_account_id AS account_id FROM chatwoot_accounts
UNION
SELECT DISTINCT chatwoot_account_id FROM meeting_notes
 WHERE created_at > now() - make_interval(secs => %(window)s);

-- name: known_messages
SELECT chatwoot_message_id AS message_id
  FROM meeting_notes
 WHERE chatwoot_account_id = %(account_id)s AND chatwoot_message_id = ANY(%(message_ids)s::text[]);

