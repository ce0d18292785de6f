-- Several secrets per Chatwoot account: the account webhook's secret (chatwoot_accounts), one per
-- API-channel inbox (Chatwoot 4.13+ signs an inbox's webhook with that channel's secret), each
-- with a previous value kept during a rotation; and a URL token of the account's own for Chatwoot
-- installations too old to sign (the global WEBHOOK_URL_TOKEN serves only accounts with no secret
-- of their own).

ALTER TABLE chatwoot_accounts ADD COLUMN IF NOT EXISTS url_token_enc text;

CREATE TABLE IF NOT EXISTS chatwoot_inbox_secrets (
    chatwoot_account_id integer NOT NULL REFERENCES chatwoot_accounts (chatwoot_account_id) ON DELETE CASCADE,
    inbox_id integer NOT NULL CHECK (inbox_id > 0),
    secret_enc text NOT NULL,
    previous_secret_enc text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (chatwoot_account_id, inbox_id)
);
