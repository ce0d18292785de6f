-- Monitor message ingestion rate
SELECT 
  DATE(created_at) as date,
  COUNT(*) as messages_received,
  COUNT(CASE WHEN processing_status = 'stored' THEN 1 END) as successfully_stored,
  COUNT(CASE WHEN processing_status = 'error' THEN 1 END) as errors
FROM meeting_notes 
WHERE source_type = 'whatsapp'
  AND created_at >= NOW() - INTERVAL '7 days'
GROUP BY DATE(created_at)
ORDER BY date DESC;
