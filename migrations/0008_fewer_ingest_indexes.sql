-- Every webhook insert writes each index of meeting_notes whose predicate the new row meets.
-- meeting_notes_unmapped_idx (account, contact) WHERE user_id IS NULL is covered by
-- meeting_notes_unmapped_contact_idx (account, contact, id) INCLUDE (...), same predicate, which
-- every query on messages without a user can use: one index write less per message.
DROP INDEX IF EXISTS meeting_notes_unmapped_idx;
