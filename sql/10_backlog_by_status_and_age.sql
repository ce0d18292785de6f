-- Work waiting, by stage and age (since received; for transcription and classification, since the
-- last change): archive, archived updates, transcription, classification, archive errors, outbox.
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
