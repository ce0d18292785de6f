-- Full-text search of archived messages (migrations/0019: search_vector, search_document() and
-- search_query()). Optional filters are NULL when not given; the newest matches first, and the
-- excerpt is made for the page's rows only.

-- name: search_messages
SELECT m.id, m.user_id, m.chatwoot_account_id, m.chatwoot_contact_id, m.chatwoot_conversation_id,
       m.source_type, m.message_type, m.message_kind, m.message_at, m.created_at,
       ts_headline(%(headline_config)s::regconfig, m.doc, search_query(%(words)s, %(languages)s),
                   %(headline_options)s) AS excerpt
FROM (
    SELECT n.id, n.user_id, n.chatwoot_account_id, n.chatwoot_contact_id, n.chatwoot_conversation_id,
           n.source_type, n.message_type, n.message_kind,
           coalesce(n.message_created_at, n.created_at) AS message_at, n.created_at,
           left(concat_ws(' ', n.content, n.transcript), 5000) AS doc
    FROM meeting_notes n
    WHERE n.search_vector @@ search_query(%(words)s, %(languages)s)
      AND n.processing_status = 'stored'
      AND (%(user_id)s::text IS NULL OR n.user_id = %(user_id)s)
      AND (%(account_id)s::integer IS NULL OR n.chatwoot_account_id = %(account_id)s)
      AND (%(contact_id)s::integer IS NULL OR n.chatwoot_contact_id = %(contact_id)s)
      AND (%(channel)s::text IS NULL OR n.source_type = %(channel)s)
      AND (%(since)s::timestamptz IS NULL OR n.created_at >= %(since)s)
      AND (%(until)s::timestamptz IS NULL OR n.created_at < %(until)s)
      AND (%(exclude_id)s::bigint IS NULL OR n.id <> %(exclude_id)s)
      AND (NOT %(own_only)s OR (n.message_type = 'incoming' AND n.message_kind IS DISTINCT FROM 'command'))
      AND (%(before_id)s::bigint IS NULL OR (n.created_at, n.id) < (%(before_at)s::timestamptz, %(before_id)s))
    ORDER BY n.created_at DESC, n.id DESC
    LIMIT %(limit)s
) m
ORDER BY m.created_at DESC, m.id DESC;

-- name: search_user_language
SELECT user_id, language FROM user_bucket_mapping WHERE user_id = %(user_id)s;

-- The words as the search reads them ('' when nothing in them can be searched).
-- name: search_parsed
SELECT search_query(%(words)s, %(languages)s)::text AS query;
