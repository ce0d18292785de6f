-- Full-text search of archived messages (migrations/0019: search_vector, search_document() and
-- search_query(), and the GIN index of the words with the user, contact and channel). Optional
-- filters are NULL when not given; the newest matches first.
--
-- Two ways to the newest matches, chosen by what the words find rather than by the planner's
-- guess (which cannot tell a word found nowhere from one found in a thousand messages):
-- `hits` asks the GIN index for up to %(probe)s matches; when there are fewer, those are all of
-- them and are sorted; when there are that many, the words are common and walking the messages
-- newest first finds a page of them after a few hundred rows. The excerpt is made for the page's
-- rows only.

-- name: search_messages
WITH matching AS NOT MATERIALIZED (  -- the filters, written once; inlined where each reads it
    SELECT n.id, n.created_at
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
), hits AS MATERIALIZED (
    SELECT id, created_at FROM matching LIMIT %(probe)s
), page AS (
    (SELECT id, created_at FROM hits
      WHERE (SELECT count(*) FROM hits) < %(probe)s
      ORDER BY created_at DESC, id DESC
      LIMIT %(limit)s)
    UNION ALL
    (SELECT id, created_at FROM matching
      WHERE (SELECT count(*) FROM hits) >= %(probe)s
      ORDER BY created_at DESC, id DESC
      LIMIT %(limit)s)
)
SELECT n.id, n.user_id, n.chatwoot_account_id, n.chatwoot_contact_id, n.chatwoot_conversation_id,
       n.source_type, n.message_type, n.message_kind,
       coalesce(n.message_created_at, n.created_at) AS message_at, n.created_at,
       ts_headline(%(headline_config)s::regconfig, left(concat_ws(' ', n.content, n.transcript), 5000),
                   search_query(%(words)s, %(languages)s), %(headline_options)s) AS excerpt
FROM page
JOIN meeting_notes n ON n.id = page.id
ORDER BY page.created_at DESC, page.id DESC;

-- name: search_user_language
SELECT user_id, language FROM user_bucket_mapping WHERE user_id = %(user_id)s;

-- The words as the search reads them ('' when nothing in them can be searched).
-- name: search_parsed
SELECT search_query(%(words)s, %(languages)s)::text AS query;
