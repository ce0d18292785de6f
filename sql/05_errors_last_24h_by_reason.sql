-- Archive errors of the last 24 hours by reason, most frequent first, with when each was last seen
-- (03 is the seed guide's version, without the order and last_seen).
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
