-- Storage per user, largest first (top 100): archived messages, attachment files and their size.
-- Buckets that belong to no user (an account's fallback for unmapped contacts) are listed too.
SELECT *
FROM (
    SELECT
        m.user_id,
        m.bucket_name,
        coalesce(u.messages, 0) AS messages,
        coalesce(b.attachments, 0) AS attachments,
        round(coalesce(b.bytes, 0) / 1048576.0, 1) AS attachment_mib,
        u.last_message_at
    FROM user_bucket_mapping m
    LEFT JOIN user_storage_stats u ON u.user_id = m.user_id
    LEFT JOIN bucket_storage_stats b ON b.bucket_name = m.bucket_name
    UNION ALL
    SELECT NULL, b.bucket_name, NULL, b.attachments, round(b.bytes / 1048576.0, 1), NULL
    FROM bucket_storage_stats b
    WHERE b.attachments > 0
      AND NOT EXISTS (SELECT 1 FROM user_bucket_mapping m WHERE m.bucket_name = b.bucket_name)
) AS per_bucket
ORDER BY attachment_mib DESC, messages DESC NULLS LAST, user_id
LIMIT 100;
