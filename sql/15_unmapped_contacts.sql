-- Contacts whose messages are archived without a user (in their account's fallback bucket),
-- most messages first (top 100). Link one with `flask users link` or a link code.
WITH contacts AS (
    SELECT
        chatwoot_account_id,
        chatwoot_contact_id,
        count(*) AS messages,
        count(*) FILTER (WHERE processing_status = 'stored') AS stored,
        min(created_at) AS first_seen,
        max(created_at) AS last_seen,
        max(id) FILTER (WHERE message_type = 'incoming') AS last_incoming_id
    FROM meeting_notes
    WHERE user_id IS NULL
      AND chatwoot_contact_id IS NOT NULL
    GROUP BY chatwoot_account_id, chatwoot_contact_id
)
SELECT
    c.chatwoot_account_id AS account_id,
    c.chatwoot_contact_id AS contact_id,
    n.payload -> 'sender' ->> 'name' AS name,
    n.payload -> 'sender' ->> 'phone_number' AS phone,
    c.messages,
    c.stored,
    c.first_seen,
    c.last_seen
FROM contacts c
LEFT JOIN meeting_notes n ON n.id = c.last_incoming_id
WHERE NOT EXISTS (
    SELECT 1 FROM contact_links l
    WHERE l.chatwoot_account_id = c.chatwoot_account_id
      AND l.link_type = 'contact_id'
      AND l.link_value = c.chatwoot_contact_id::text
)
ORDER BY c.messages DESC, c.last_seen DESC
LIMIT 100;
