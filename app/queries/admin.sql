-- The admin API, its CLI and the admin page: users, links, erasure, the dashboard.

-- name: user_list
SELECT m.user_id, m.bucket_name, m.notify_on_ready, m.display_name, m.language, m.bucket_created_at,
       m.created_at, m.updated_at, coalesce(s.messages, 0) AS messages, s.last_message_at,
       (SELECT count(*) FROM contact_links l WHERE l.user_id = m.user_id) AS links
FROM user_bucket_mapping m
LEFT JOIN user_storage_stats s ON s.user_id = m.user_id
WHERE m.user_id > %(after)s
ORDER BY m.user_id
LIMIT %(limit)s;

-- name: user_with_stats
SELECT m.user_id, m.bucket_name, m.notify_on_ready, m.display_name, m.language, m.bucket_created_at,
       m.created_at, m.updated_at, coalesce(s.messages, 0) AS messages, s.last_message_at,
       coalesce(b.attachments, 0) AS attachments, coalesce(b.bytes, 0) AS attachment_bytes
FROM user_bucket_mapping m
LEFT JOIN user_storage_stats s ON s.user_id = m.user_id
LEFT JOIN bucket_storage_stats b ON b.bucket_name = m.bucket_name
WHERE m.user_id = %(user_id)s;

-- Each field changes only when its set_* flag is true (so a field can also be cleared to NULL).
-- name: user_update
UPDATE user_bucket_mapping
SET display_name = CASE WHEN %(set_display_name)s THEN %(display_name)s ELSE display_name END,
    language = CASE WHEN %(set_language)s THEN %(language)s ELSE language END,
    notify_on_ready = CASE WHEN %(set_notify_on_ready)s THEN %(notify_on_ready)s ELSE notify_on_ready END,
    updated_at = now()
WHERE user_id = %(user_id)s
RETURNING user_id;

-- name: user_links
SELECT id, chatwoot_account_id, link_type, link_value, created_at
FROM contact_links
WHERE user_id = %(user_id)s
ORDER BY chatwoot_account_id, link_type, id;

-- name: link_delete
DELETE FROM contact_links
WHERE id = %(link_id)s AND user_id = %(user_id)s
RETURNING id, chatwoot_account_id, link_type, link_value;

-- Contacts with archived messages but no user (those sql/15_unmapped_contacts.sql lists, with their
-- identifier), one page at a time.
-- name: unmapped_contacts
WITH contacts AS (
    SELECT chatwoot_account_id, chatwoot_contact_id,
           count(*) AS messages,
           count(*) FILTER (WHERE processing_status = 'stored') AS stored,
           min(created_at) AS first_seen,
           max(created_at) AS last_seen,
           max(id) FILTER (WHERE message_type = 'incoming') AS last_incoming_id
    FROM meeting_notes
    WHERE user_id IS NULL AND chatwoot_contact_id IS NOT NULL
    GROUP BY chatwoot_account_id, chatwoot_contact_id
)
SELECT c.chatwoot_account_id AS account_id, c.chatwoot_contact_id AS contact_id,
       n.payload -> 'sender' ->> 'name' AS name,
       n.payload -> 'sender' ->> 'phone_number' AS phone,
       n.payload -> 'sender' ->> 'identifier' AS identifier,
       c.messages, c.stored, c.first_seen, c.last_seen
FROM contacts c
LEFT JOIN meeting_notes n ON n.id = c.last_incoming_id
WHERE NOT EXISTS (
    SELECT 1 FROM contact_links l
    WHERE l.chatwoot_account_id = c.chatwoot_account_id
      AND l.link_type = 'contact_id'
      AND l.link_value = c.chatwoot_contact_id::text
)
ORDER BY c.messages DESC, c.last_seen DESC, c.chatwoot_account_id, c.chatwoot_contact_id
LIMIT %(limit)s OFFSET %(offset)s;

-- Erasure -------------------------------------------------------------------------------------

-- Messages of the user's contacts still archived under an account's fallback (not re-homed yet).
-- name: erase_fallback_notes
SELECT n.id, n.chatwoot_message_id, n.message_created_at, n.created_at, n.gcs_storage_path
FROM meeting_notes n
WHERE n.chatwoot_account_id = %(account_id)s
  AND n.user_id IS NULL
  AND (n.chatwoot_contact_id = ANY(%(contact_ids)s::integer[])
    OR n.contact_phone = ANY(%(phones)s::text[])
    OR n.contact_identifier = ANY(%(identifiers)s::text[]));

-- Every message row to erase: the user's, and the fallback ones found above.
-- name: erase_note_keys
SELECT id, chatwoot_account_id, chatwoot_conversation_id
FROM meeting_notes
WHERE user_id = %(user_id)s OR id = ANY(%(fallback_ids)s::bigint[])
FOR UPDATE;

-- name: erase_find_orders
SELECT o.id, o.chatwoot_account_id, o.chatwoot_conversation_id
FROM orders o
WHERE o.user_id = %(user_id)s
   OR o.source_meeting_note_id = ANY(%(note_ids)s::bigint[])
   OR (o.user_id IS NULL AND EXISTS (
        SELECT 1 FROM unnest(%(contact_accounts)s::integer[], %(contact_ids)s::integer[]) AS c (account_id, contact_id)
        WHERE c.account_id = o.chatwoot_account_id AND c.contact_id = o.chatwoot_contact_id))
FOR UPDATE;

-- Conversations recorded for the user or for the user's contacts.
-- name: erase_find_conversations
SELECT c.chatwoot_account_id, c.chatwoot_conversation_id
FROM conversations c
WHERE c.user_id = %(user_id)s
   OR (c.user_id IS NULL AND EXISTS (
        SELECT 1 FROM unnest(%(contact_accounts)s::integer[], %(contact_ids)s::integer[]) AS k (account_id, contact_id)
        WHERE k.account_id = c.chatwoot_account_id AND k.contact_id = c.chatwoot_contact_id))
FOR UPDATE;

-- Messages recorded for the user's conversations and orders (what we told the user).
-- name: erase_outbox
DELETE FROM outbox o
WHERE o.order_id = ANY(%(order_ids)s::bigint[])
   OR EXISTS (
        SELECT 1 FROM unnest(%(conversation_accounts)s::integer[], %(conversation_ids)s::integer[])
            AS k (account_id, conversation_id)
        WHERE k.account_id = o.chatwoot_account_id AND k.conversation_id = o.chatwoot_conversation_id);

-- name: erase_orders
DELETE FROM orders WHERE id = ANY(%(order_ids)s::bigint[]);

-- name: erase_conversations
DELETE FROM conversations c
WHERE EXISTS (
    SELECT 1 FROM unnest(%(conversation_accounts)s::integer[], %(conversation_ids)s::integer[])
        AS k (account_id, conversation_id)
    WHERE k.account_id = c.chatwoot_account_id AND k.conversation_id = c.chatwoot_conversation_id);

-- Rows that go with the messages (deleted with them by ON DELETE CASCADE), counted for the report.
-- name: erase_count_children
SELECT
    (SELECT count(*) FROM message_updates WHERE meeting_note_id = ANY(%(note_ids)s::bigint[])) AS message_updates,
    (SELECT count(*) FROM message_attachments WHERE meeting_note_id = ANY(%(note_ids)s::bigint[]))
        AS message_attachments,
    (SELECT count(*) FROM transcriptions WHERE meeting_note_id = ANY(%(note_ids)s::bigint[])) AS transcriptions;

-- name: erase_notes
DELETE FROM meeting_notes WHERE id = ANY(%(note_ids)s::bigint[]);

-- name: erase_link_codes
DELETE FROM link_codes WHERE user_id = %(user_id)s;

-- name: erase_contact_links
DELETE FROM contact_links WHERE user_id = %(user_id)s;

-- name: erase_user_stats
DELETE FROM user_storage_stats WHERE user_id = %(user_id)s;

-- name: erase_bucket_rows
WITH stats AS (DELETE FROM bucket_storage_stats WHERE bucket_name = %(bucket_name)s)
DELETE FROM gcs_buckets WHERE bucket_name = %(bucket_name)s;

-- name: erase_mapping
DELETE FROM user_bucket_mapping WHERE user_id = %(user_id)s;

-- Dashboard ----------------------------------------------------------------------------------

-- Messages per UTC day for the last few days (today last): roll-ups for stored and failed
-- messages, the rows themselves for those still waiting.
-- name: dashboard_days
WITH days AS (
    SELECT generate_series((now() AT TIME ZONE 'UTC')::date - (%(days)s - 1),
                           (now() AT TIME ZONE 'UTC')::date, interval '1 day')::date AS day
),
rolled AS (
    SELECT day, sum(stored) AS stored, sum(errors) AS errors
    FROM message_daily_stats
    WHERE day >= (now() AT TIME ZONE 'UTC')::date - (%(days)s - 1)
    GROUP BY day
),
waiting AS (
    SELECT (created_at AT TIME ZONE 'UTC')::date AS day, count(*) AS waiting
    FROM meeting_notes
    WHERE processing_status = 'received'
      AND created_at >= ((now() AT TIME ZONE 'UTC')::date - (%(days)s - 1))::timestamp AT TIME ZONE 'UTC'
    GROUP BY 1
)
SELECT d.day,
       (coalesce(r.stored, 0) + coalesce(r.errors, 0) + coalesce(w.waiting, 0))::bigint AS received,
       coalesce(r.stored, 0)::bigint AS stored,
       coalesce(r.errors, 0)::bigint AS errors,
       coalesce(w.waiting, 0)::bigint AS waiting
FROM days d
LEFT JOIN rolled r ON r.day = d.day
LEFT JOIN waiting w ON w.day = d.day
ORDER BY d.day;

-- Work waiting per stage and its age (also `GET /admin/stats`).
-- name: dashboard_backlog
-- The same statement as sql/10_backlog_by_status_and_age.sql, so the page and `flask monitor`
-- count the same backlog (a test compares the two).
WITH stages (stage, position) AS (
    VALUES ('archive', 1), ('update archive', 2), ('transcription', 3), ('classification', 4),
           ('archive error', 5), ('outbox', 6)
),
waiting AS (
    SELECT 'archive' AS stage, created_at AS since
      FROM meeting_notes WHERE processing_status = 'received'
    UNION ALL
    SELECT 'update archive', created_at
      FROM message_updates WHERE processing_status = 'received'
    UNION ALL
    SELECT 'transcription', updated_at
      FROM meeting_notes WHERE transcription_status = 'pending' AND processing_status = 'stored'
    UNION ALL
    SELECT 'classification', updated_at
      FROM meeting_notes
     WHERE classification_status = 'pending' AND processing_status = 'stored'
       AND transcription_status <> 'pending'
    UNION ALL
    SELECT 'archive error', created_at
      FROM meeting_notes WHERE processing_status = 'error'
    UNION ALL
    SELECT 'outbox', created_at
      FROM outbox WHERE status IN ('pending', 'sending')
),
per_stage AS (
    SELECT
        stage,
        count(*) AS waiting,
        count(*) FILTER (WHERE since > now() - interval '5 minutes') AS under_5m,
        count(*) FILTER (WHERE since <= now() - interval '5 minutes'
                           AND since > now() - interval '1 hour') AS "5m_to_1h",
        count(*) FILTER (WHERE since <= now() - interval '1 hour'
                           AND since > now() - interval '24 hours') AS "1h_to_24h",
        count(*) FILTER (WHERE since <= now() - interval '24 hours') AS over_24h,
        min(since) AS oldest
    FROM waiting
    GROUP BY stage
)
SELECT
    s.stage,
    coalesce(p.waiting, 0) AS waiting,
    coalesce(p.under_5m, 0) AS under_5m,
    coalesce(p."5m_to_1h", 0) AS "5m_to_1h",
    coalesce(p."1h_to_24h", 0) AS "1h_to_24h",
    coalesce(p.over_24h, 0) AS over_24h,
    date_trunc('second', now() - p.oldest) AS oldest_age
FROM stages s
LEFT JOIN per_stage p ON p.stage = s.stage
ORDER BY s.position;

-- Archive errors and failed notices of the last 24 hours, by reason.
-- name: dashboard_errors
SELECT what, error_details, count(*) AS occurrences, max(at) AS last_seen
FROM (
    SELECT 'archive' AS what, coalesce(error_details, '(no detail)') AS error_details, updated_at AS at
      FROM meeting_notes
     WHERE processing_status = 'error' AND created_at >= now() - interval '24 hours'
    UNION ALL
    SELECT 'notice', coalesce(error_details, '(no detail)'), updated_at
      FROM outbox
     WHERE status = 'failed' AND created_at >= now() - interval '24 hours'
) AS e
GROUP BY what, error_details
ORDER BY occurrences DESC, last_seen DESC
LIMIT %(limit)s;

-- Browsing: messages found by contact or user, and a user's page --------------------------------
-- Newest first, a page at a time (the indexes of migrations/0011). A search by the words of the
-- text or transcript is the records search (search.sql).

-- One of contact_id, phone or user_id is given, the others are NULL (the driver sends them as
-- literals, so the planner drops the unused conditions and uses that column's index).
-- name: browse_messages
SELECT n.id, n.created_at, n.chatwoot_account_id AS account_id, n.chatwoot_conversation_id AS conversation_id,
       n.chatwoot_contact_id AS contact_id, n.contact_phone AS phone, n.user_id, n.source_type, n.message_type,
       n.content_type, left(n.content, 300) AS content, left(n.transcript, 300) AS transcript,
       n.processing_status, n.transcription_status, n.classification_status, n.message_kind,
       n.error_details, n.gcs_storage_path, n.attempts
FROM meeting_notes n
WHERE (%(contact_id)s::integer IS NULL OR n.chatwoot_contact_id = %(contact_id)s)
  AND (%(phone)s::text IS NULL OR n.contact_phone = %(phone)s)
  AND (%(user_id)s::text IS NULL OR n.user_id = %(user_id)s)
ORDER BY n.created_at DESC, n.id DESC
LIMIT %(limit)s OFFSET %(offset)s;

-- A user's messages by status and kind, and since when.
-- name: user_message_counts
SELECT count(*) AS messages,
       count(*) FILTER (WHERE processing_status = 'stored') AS stored,
       count(*) FILTER (WHERE processing_status = 'received') AS waiting,
       count(*) FILTER (WHERE processing_status = 'error') AS errors,
       count(*) FILTER (WHERE transcription_status = 'done') AS transcribed,
       count(*) FILTER (WHERE transcription_status = 'pending') AS transcription_pending,
       count(*) FILTER (WHERE transcription_status = 'failed') AS transcription_failed,
       count(*) FILTER (WHERE classification_status = 'failed') AS classification_failed,
       count(*) FILTER (WHERE message_kind = 'note') AS notes,
       count(*) FILTER (WHERE message_kind = 'order') AS orders,
       count(*) FILTER (WHERE message_kind = 'command') AS commands,
       count(*) FILTER (WHERE message_kind = 'answer') AS answers,
       min(created_at) AS first_message_at,
       max(created_at) AS last_message_at
FROM meeting_notes
WHERE user_id = %(user_id)s;

-- The user's bucket, and the buckets its messages are still being moved out of.
-- name: user_buckets
SELECT m.bucket_name, 'own' AS role, g.state, g.how, coalesce(g.created_at, m.bucket_created_at) AS since,
       coalesce(b.attachments, 0) AS attachments, coalesce(b.bytes, 0) AS bytes, NULL::bigint AS moving
FROM user_bucket_mapping m
LEFT JOIN gcs_buckets g ON g.bucket_name = m.bucket_name
LEFT JOIN bucket_storage_stats b ON b.bucket_name = m.bucket_name
WHERE m.user_id = %(user_id)s
UNION ALL
SELECT n.rehome_from_bucket, 'moving out', NULL, NULL, min(n.updated_at), NULL, NULL, count(*)
FROM meeting_notes n
WHERE n.user_id = %(user_id)s AND n.rehome_from_bucket IS NOT NULL
GROUP BY n.rehome_from_bucket;

-- name: user_orders_by_status
SELECT status, count(*) AS orders, max(created_at) AS last_at
FROM orders
WHERE user_id = %(user_id)s
GROUP BY status
ORDER BY status;

-- The newest rows of the dead_letters view (migrations/0007), taken stage by stage from the small
-- indexes of migrations/0011 (the view sorts all its rows first). A test checks that both agree.
-- name: dead_letters_newest
SELECT stage, id, chatwoot_account_id, chatwoot_conversation_id, attempts, error_details, updated_at
FROM (
    (SELECT 'archive'::text AS stage, id, chatwoot_account_id, chatwoot_conversation_id, attempts,
            error_details, updated_at
       FROM meeting_notes WHERE processing_status = 'error'
      ORDER BY updated_at DESC LIMIT %(limit)s)
    UNION ALL
    (SELECT 'transcription', id, chatwoot_account_id, chatwoot_conversation_id, attempts, error_details,
            updated_at
       FROM meeting_notes WHERE transcription_status = 'failed'
      ORDER BY updated_at DESC LIMIT %(limit)s)
    UNION ALL
    (SELECT 'classification', id, chatwoot_account_id, chatwoot_conversation_id, attempts, error_details,
            updated_at
       FROM meeting_notes WHERE classification_status = 'failed'
      ORDER BY updated_at DESC LIMIT %(limit)s)
    UNION ALL
    (SELECT 'update', u.id, n.chatwoot_account_id, n.chatwoot_conversation_id, u.attempts, u.error_details,
            u.updated_at
       FROM message_updates u JOIN meeting_notes n ON n.id = u.meeting_note_id
      WHERE u.processing_status = 'error'
      ORDER BY u.updated_at DESC LIMIT %(limit)s)
    UNION ALL
    (SELECT 'outbox', id, chatwoot_account_id, chatwoot_conversation_id, requeue_attempts, error_details,
            updated_at
       FROM outbox WHERE status = 'failed'
      ORDER BY updated_at DESC LIMIT %(limit)s)
) AS newest
ORDER BY updated_at DESC, stage, id
LIMIT %(limit)s;
