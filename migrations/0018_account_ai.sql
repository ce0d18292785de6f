-- Each Chatwoot account its own AI: transcription, classification and drafting providers, their
-- servers, keys and models, the language of its voice notes and of its replies, and a monthly
-- transcription budget. A NULL column means "the environment's setting". Keys are stored
-- encrypted (Fernet, SECRETS_ENCRYPTION_KEY) like the account's other secrets. An account needs
-- no row in chatwoot_accounts to have one here.

CREATE TABLE IF NOT EXISTS account_ai_settings (
    chatwoot_account_id integer PRIMARY KEY CHECK (chatwoot_account_id > 0),
    transcription_provider text CHECK (transcription_provider IN ('openai', 'local', 'none')),
    transcription_base_url text,
    transcription_api_key_enc text,
    transcription_model text,
    transcription_language text,
    local_whisper_model text,
    classification_provider text CHECK (classification_provider IN ('openai', 'rules')),
    classification_base_url text,
    classification_api_key_enc text,
    classification_model text,
    generation_provider text CHECK (generation_provider IN ('openai', 'external')),
    generation_base_url text,
    generation_api_key_enc text,
    generation_model text,
    reply_language text,
    -- Audio minutes per calendar month (UTC); 0: no limit.
    transcription_budget_minutes integer CHECK (transcription_budget_minutes >= 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- What each transcription was, by account: the budget and the cost per account read these.
-- skip_reason: none (no provider), budget (the month's minutes were spent), english_only (the
-- model understands English only and the note is in another language). avg_logprob and
-- no_speech_prob are the model's confidence (local provider), decode_temperature the highest
-- sampling temperature its decoder fell back to (0: its first reading passed Whisper's own
-- thresholds), low_confidence when any of them says the transcript is doubtful.
ALTER TABLE transcriptions ADD COLUMN IF NOT EXISTS chatwoot_account_id integer;
ALTER TABLE transcriptions ADD COLUMN IF NOT EXISTS skip_reason text;
ALTER TABLE transcriptions ADD COLUMN IF NOT EXISTS avg_logprob numeric(8, 4);
ALTER TABLE transcriptions ADD COLUMN IF NOT EXISTS no_speech_prob numeric(6, 4);
ALTER TABLE transcriptions ADD COLUMN IF NOT EXISTS decode_temperature numeric(4, 2);
ALTER TABLE transcriptions ADD COLUMN IF NOT EXISTS low_confidence boolean NOT NULL DEFAULT false;

UPDATE transcriptions t
   SET chatwoot_account_id = n.chatwoot_account_id
  FROM meeting_notes n
 WHERE n.id = t.meeting_note_id AND t.chatwoot_account_id IS NULL;

CREATE INDEX IF NOT EXISTS transcriptions_account_created_idx
    ON transcriptions (chatwoot_account_id, created_at);
