-- Messages received per day, with how many are stored and how many failed (last 30 days).
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
