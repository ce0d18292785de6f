-- Chatwoot as it really behaves: answers and refusals that come back as updates of our own
-- messages, WhatsApp templates after the 24-hour window, and tokens that may not read.

-- An update of one of our messages can carry what the order flow needs: the web widget's
-- choice (content_attributes.submitted_values) or the channel's refusal
-- (content_attributes.external_error). Such an update is classified once it is archived; every
-- other update is not (a new version of a contact's message is not classified again).
ALTER TABLE message_updates
    ADD COLUMN IF NOT EXISTS classification_status text NOT NULL DEFAULT 'not_needed'
        CHECK (classification_status IN ('not_needed', 'pending', 'done', 'failed')),
    ADD COLUMN IF NOT EXISTS classification_attempts integer NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS message_updates_classify_pending_idx ON message_updates (updated_at)
    WHERE classification_status = 'pending';

-- Outbox: `no_template` is a notice that could only go out as an approved WhatsApp template
-- (the 24-hour window was closed) while none is configured. `refused_at`: the channel refused a
-- message Chatwoot had accepted (it is then `failed`, error_details holding the channel's error).
-- `template_values`: the values a template version of the notice is filled with, recorded with it.
ALTER TABLE outbox DROP CONSTRAINT IF EXISTS outbox_status_check;
ALTER TABLE outbox ADD CONSTRAINT outbox_status_check
    CHECK (status IN ('pending', 'sending', 'sent', 'failed', 'not_sent', 'no_template'));
ALTER TABLE outbox
    ADD COLUMN IF NOT EXISTS refused_at timestamptz,
    ADD COLUMN IF NOT EXISTS template_values jsonb;

-- An order whose question never reached the contact waits for the contact's next message.
ALTER TABLE orders DROP CONSTRAINT IF EXISTS orders_status_check;
ALTER TABLE orders ADD CONSTRAINT orders_status_check
    CHECK (status IN ('clarifying', 'waiting_for_contact', 'queued', 'generating', 'ready', 'failed',
                      'cancelled'));

-- Per account: a user's access token for reads (agent-bot tokens may not list), and the WhatsApp
-- template of the ready notice.
ALTER TABLE chatwoot_accounts
    ADD COLUMN IF NOT EXISTS user_access_token_enc text,
    ADD COLUMN IF NOT EXISTS ready_template_name text,
    ADD COLUMN IF NOT EXISTS ready_template_language text,
    ADD COLUMN IF NOT EXISTS ready_template_category text,
    ADD COLUMN IF NOT EXISTS ready_template_params text[];

-- What Chatwoot said of each account's read token, so that a token that may not list (an agent
-- bot's) turns the backfill off for the account, said once, until the token changes.
CREATE TABLE IF NOT EXISTS chatwoot_read_access (
    chatwoot_account_id integer PRIMARY KEY,
    token_fingerprint text NOT NULL,
    token_source text NOT NULL,
    can_read boolean NOT NULL,
    detail text,
    checked_at timestamptz NOT NULL DEFAULT now(),
    changed_at timestamptz NOT NULL DEFAULT now()
);
