-- Check for unprocessed messages
SELECT COUNT(*) as unprocessed_messages
FROM meeting_notes 
WHERE source_type = 'whatsapp' 
  AND processing_status = 'stored'
  AND user_id IS NULL;
