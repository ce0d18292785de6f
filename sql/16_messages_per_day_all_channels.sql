-- Messages per UTC day and channel, last 30 days, every channel: received, archived, failed and
-- still waiting. Read from the message_daily_stats roll-up, so it stays fast on any volume
-- (01 counts the same for WhatsApp from the rows themselves).
WITH rolled AS (
    SELECT day, source_type, stored, errors
    FROM message_daily_stats
    WHERE day >= (now() AT TIME ZONE 'UTC')::date - 29
),
waiting AS (
    SELECT (created_at AT TIME ZONE 'UTC')::date AS day, source_type, count(*) AS waiting
    FROM meeting_notes
    WHERE processing_status = 'received'
      AND created_at >= ((now() AT TIME ZONE 'UTC')::date - 29)::timestamp AT TIME ZONE 'UTC'
    GROUP BY 1, 2
)
SELECT
    coalesce(r.day, w.day) AS day,
    coalesce(r.source_type, w.source_type) AS channel,
    coalesce(r.stored, 0) + coalesce(r.errors, 0) + coalesce(w.waiting, 0) AS received,
    coalesce(r.stored, 0) AS stored,
    coalesce(r.errors, 0) AS errors,
    coalesce(w.waiting, 0) AS waiting
FROM rolled r
FULL JOIN waiting w ON w.day = r.day AND w.source_type = r.source_type
WHERE coalesce(r.stored, 0) + coalesce(r.errors, 0) + coalesce(w.waiting, 0) > 0
ORDER BY 1 DESC, 2;
