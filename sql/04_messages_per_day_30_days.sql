-- WhatsApp messages received per day over the last 30 days, with how many are stored and how many
-- failed (01 is the seed guide's 7-day version of this query).
SELECT
    date_trunc('day', created_at)::date AS day,
    count(*) AS total_messages,
    count(*) FILTER (WHERE processing_status = 'stored') AS stored,
    count(*) FILTER (WHERE processing_status = 'error') AS errors
FROM meeting_notes
WHERE source_type = 'whatsapp'
  AND created_at >= now() - interval '30 days'
GROUP BY 1
ORDER BY 1 DESC;
