-- Error analysis
SELECT 
  error_details,
  COUNT(*) as error_count
FROM meeting_notes 
WHERE source_type = 'whatsapp' 
  AND processing_status = 'error'
  AND created_at >= NOW() - INTERVAL '24 hours'
GROUP BY error_details;
