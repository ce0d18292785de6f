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
)
SELECT
    s.stage,
    count(w.since) AS waiting,
    count(w.since) FILTER (WHERE w.since > now() - interval '5 minutes') AS under_5m,
    count(w.since) FILTER (WHERE w.since <= now() - interval '5 minutes'
                             AND w.since > now() - interval '1 hour') AS "5m_to_1h",
    count(w.since) FILTER (WHERE w.since <= now() - interval '1 hour'
                             AND w.since > now() - interval '24 hours') AS "1h_to_24h",
    count(w.since) FILTER (WHERE w.since <= now() - interval '24 hours') AS over_24h,
    date_trunc('second', now() - min(w.since)) AS oldest_age
FROM stages s
LEFT JOIN waiting w ON w.stage = s.stage
GROUP BY s.stage, s.position
ORDER BY s.position;
