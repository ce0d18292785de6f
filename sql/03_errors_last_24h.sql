-- Errors of the last 24 hours, grouped by reason.
SELECT
    error_details,
    count(*) AS occurrences,
    max(updated_at) AS last_seen
FROM meeting_notes
WHERE source_type = 'whatsapp'
  AND processing_status = 'error'
  AND created_at >= now() - interval '24 hours'
GROUP BY error_details
ORDER BY occurrences DESC;
