-- The archive: each attachment's copy in GCS, the buckets we know, and re-homing of messages.

-- One row per attachment of a message: where its file is in GCS, or why it is not there.
CREATE TABLE message_attachments (
    meeting_note_id bigint NOT NULL REFERENCES meeting_notes (id) ON DELETE CASCADE,
    chatwoot_attachment_id bigint NOT NULL,
    file_type text,
    content_type text,
    size_bytes bigint,
    bucket_name text,
    object_name text,
    status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'stored', 'missing', 'skipped')),
    error_details text,
    stored_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (meeting_note_id, chatwoot_attachment_id)
);
CREATE INDEX message_attachments_bucket_idx ON message_attachments (bucket_name);
CREATE INDEX message_attachments_unfinished_idx ON message_attachments (updated_at)
    WHERE status IN ('pending', 'missing');

-- Buckets the service has created or adopted (state 'ready'), and names owned by another project
-- ('foreign', never written to). Workers also keep the ready ones in memory.
CREATE TABLE gcs_buckets (
    bucket_name text PRIMARY KEY,
    state text NOT NULL CHECK (state IN ('ready', 'foreign')),
    how text NOT NULL CHECK (how IN ('created', 'adopted', 'refused')),
    project_number text,
    error_details text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Set while a message's objects are being moved out of this bucket (the account's fallback
-- bucket) into its user's bucket: copied and recorded, not yet deleted from here.
ALTER TABLE meeting_notes ADD COLUMN rehome_from_bucket text;
CREATE INDEX meeting_notes_rehome_idx ON meeting_notes (user_id) WHERE rehome_from_bucket IS NOT NULL;
