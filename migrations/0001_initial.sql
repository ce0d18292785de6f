-- The archive index, users and their buckets, conversations, orders and the outbox.

CREATE TABLE chatwoot_accounts (
    chatwoot_account_id integer PRIMARY KEY CHECK (chatwoot_account_id > 0),
    name text,
    base_url text,
    -- Secrets are Fernet tokens (SECRETS_ENCRYPTION_KEY); never returned by any API.
    api_access_token_enc text,
    webhook_secret_enc text,
    previous_webhook_secret_enc text,
    inbox_ids integer[],
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE user_bucket_mapping (
    user_id text PRIMARY KEY CHECK (length(user_id) BETWEEN 1 AND 200),
    bucket_name text NOT NULL UNIQUE,
    notify_on_ready boolean NOT NULL DEFAULT false,
    display_name text,
    language text CHECK (language IN ('en', 'pt', 'es')),
    bucket_created_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- How a Chatwoot contact is recognised as a user: by contact id, phone (E.164) or identifier.
CREATE TABLE contact_links (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id text NOT NULL REFERENCES user_bucket_mapping (user_id) ON DELETE CASCADE,
    chatwoot_account_id integer NOT NULL,
    link_type text NOT NULL CHECK (link_type IN ('contact_id', 'phone', 'identifier')),
    link_value text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (chatwoot_account_id, link_type, link_value)
);
CREATE INDEX contact_links_user_idx ON contact_links (user_id);

CREATE TABLE meeting_notes (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    chatwoot_account_id integer NOT NULL,
    chatwoot_message_id text NOT NULL,
    chatwoot_conversation_id integer,
    chatwoot_inbox_id integer,
    chatwoot_contact_id integer,
    user_id text,
    source_type text NOT NULL DEFAULT 'whatsapp',
    message_type text,
    content_type text,
    content text,
    is_private boolean NOT NULL DEFAULT false,
    sender_type text,
    message_created_at timestamptz,
    payload jsonb NOT NULL,
    -- sha256 of what we keep of the message (content, attributes, private, attachments).
    content_fingerprint text,
    processing_status text NOT NULL DEFAULT 'received'
        CHECK (processing_status IN ('received', 'stored', 'error')),
    transcription_status text NOT NULL DEFAULT 'not_needed'
        CHECK (transcription_status IN ('not_needed', 'pending', 'done', 'failed', 'skipped')),
    transcript text,
    classification_status text NOT NULL DEFAULT 'not_needed'
        CHECK (classification_status IN ('not_needed', 'pending', 'done', 'failed')),
    message_kind text CHECK (message_kind IN ('note', 'order', 'command', 'answer')),
    gcs_storage_path text,
    error_details text,
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    stored_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT meeting_notes_account_message_key UNIQUE (chatwoot_account_id, chatwoot_message_id)
);
-- Monitoring: per day and status, backlogs, unmapped contacts, recent errors.
CREATE INDEX meeting_notes_created_idx ON meeting_notes (created_at);
CREATE INDEX meeting_notes_status_created_idx ON meeting_notes (processing_status, created_at);
CREATE INDEX meeting_notes_pending_work_idx ON meeting_notes (updated_at)
    WHERE processing_status = 'received'
       OR transcription_status = 'pending'
       OR classification_status = 'pending';
CREATE INDEX meeting_notes_unmapped_idx ON meeting_notes (chatwoot_account_id, chatwoot_contact_id)
    WHERE user_id IS NULL;
CREATE INDEX meeting_notes_user_idx ON meeting_notes (user_id, created_at) WHERE user_id IS NOT NULL;
CREATE INDEX meeting_notes_conversation_idx
    ON meeting_notes (chatwoot_account_id, chatwoot_conversation_id, created_at);

-- Updates of a message that changed what we keep: append-only, one per distinct change.
CREATE TABLE message_updates (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    meeting_note_id bigint NOT NULL REFERENCES meeting_notes (id) ON DELETE CASCADE,
    fingerprint text NOT NULL,
    payload jsonb NOT NULL,
    processing_status text NOT NULL DEFAULT 'received'
        CHECK (processing_status IN ('received', 'stored', 'error')),
    gcs_storage_path text,
    error_details text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (meeting_note_id, fingerprint)
);
CREATE INDEX message_updates_received_idx ON message_updates (created_at)
    WHERE processing_status = 'received';

CREATE TABLE conversations (
    chatwoot_account_id integer NOT NULL,
    chatwoot_conversation_id integer NOT NULL,
    chatwoot_contact_id integer,
    user_id text,
    language text CHECK (language IN ('en', 'pt', 'es')),
    can_reply boolean,
    context_json jsonb NOT NULL DEFAULT '{}'::jsonb,
    last_message_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (chatwoot_account_id, chatwoot_conversation_id)
);

CREATE TABLE orders (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    chatwoot_account_id integer NOT NULL,
    chatwoot_conversation_id integer NOT NULL,
    chatwoot_contact_id integer,
    user_id text,
    source_meeting_note_id bigint REFERENCES meeting_notes (id) ON DELETE SET NULL,
    status text NOT NULL DEFAULT 'clarifying'
        CHECK (status IN ('clarifying', 'queued', 'generating', 'ready', 'failed', 'cancelled')),
    platform text CHECK (platform IN ('LinkedIn', 'Instagram', 'Twitter', 'Blog')),
    length text CHECK (length IN ('Short', 'Medium', 'Long')),
    tone text CHECK (tone IN ('Professional', 'Casual', 'Friendly', 'Authoritative')),
    topic text CHECK (topic IN ('Trends', 'News', 'Tips', 'Product')),
    subject text,
    content text,
    content_url text,
    gcs_storage_path text,
    error_details text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    ready_at timestamptz,
    UNIQUE (source_meeting_note_id)
);
CREATE INDEX orders_status_idx ON orders (status, created_at);
CREATE INDEX orders_conversation_idx ON orders (chatwoot_account_id, chatwoot_conversation_id, status);

-- Every message the service sends, recorded (with a unique key) before it is sent.
CREATE TABLE outbox (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dedupe_key text NOT NULL UNIQUE,
    chatwoot_account_id integer NOT NULL,
    chatwoot_conversation_id integer NOT NULL,
    kind text NOT NULL,
    order_id bigint REFERENCES orders (id) ON DELETE SET NULL,
    body jsonb NOT NULL,
    status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'sending', 'sent', 'failed', 'not_sent')),
    attempts integer NOT NULL DEFAULT 0,
    chatwoot_message_id text,
    error_details text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    sent_at timestamptz
);
CREATE INDEX outbox_status_idx ON outbox (status, created_at);
CREATE INDEX outbox_conversation_idx ON outbox (chatwoot_account_id, chatwoot_conversation_id);
