-- An attachment that could not be fetched no longer holds back its message: it is marked
-- 'unavailable' with the reason, the message is stored and goes on, and an admin may retry the
-- attachment (`flask storage retry-attachments`, POST /admin/messages/<id>/attachments/retry).
-- Rows 'missing' (the message went to 'error' with it) become 'unavailable'; the value stays
-- allowed for what older code may still write.

ALTER TABLE message_attachments DROP CONSTRAINT message_attachments_status_check;
UPDATE message_attachments SET status = 'unavailable', updated_at = now() WHERE status = 'missing';
ALTER TABLE message_attachments ADD CONSTRAINT message_attachments_status_check
    CHECK (status IN ('pending', 'stored', 'unavailable', 'missing', 'skipped'));

DROP INDEX message_attachments_unfinished_idx;
CREATE INDEX message_attachments_unfinished_idx ON message_attachments (updated_at)
    WHERE status IN ('pending', 'unavailable');
