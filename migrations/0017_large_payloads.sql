-- A large delivery (an email newsletter: its HTML and text parts, and Chatwoot's copy of the
-- message in conversation.messages) keeps in `payload` what the stages read, without that copy;
-- the payload as received (secrets removed) waits in `archive_payload` until the archive job has
-- written it to GCS, then is cleared.
ALTER TABLE meeting_notes ADD COLUMN IF NOT EXISTS archive_payload jsonb;
