-- Stored messages whose contact is not mapped to a user yet (archived under the account fallback).
SELECT count(*) AS stored_without_user
FROM meeting_notes
WHERE source_type = 'whatsapp'
  AND processing_status = 'stored'
  AND user_id IS NULL;
