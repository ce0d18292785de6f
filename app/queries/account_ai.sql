-- Each account's own AI settings (app/chatwoot/account_ai.py); keys are Fernet-encrypted.

-- name: ai_settings_get
SELECT * FROM account_ai_settings WHERE chatwoot_account_id = %(account_id)s;

-- name: ai_settings_list
SELECT * FROM account_ai_settings ORDER BY chatwoot_account_id;

-- name: ai_settings_upsert
-- Each column is written only when its `<column>_set` parameter is true (a NULL value then clears
-- it: the environment's setting applies again); the others keep what they hold.
INSERT INTO account_ai_settings AS s (chatwoot_account_id,
    transcription_provider,
    transcription_base_url,
    transcription_api_key_enc,
    transcription_model,
    transcription_language,
    local_whisper_model,
    classification_provider,
    classification_base_url,
    classification_api_key_enc,
    classification_model,
    generation_provider,
    generation_base_url,
    generation_api_key_enc,
    generation_model,
    reply_language,
    transcription_budget_minutes)
VALUES (%(account_id)s,
    %(transcription_provider)s,
    %(transcription_base_url)s,
    %(transcription_api_key_enc)s,
    %(transcription_model)s,
    %(transcription_language)s,
    %(local_whisper_model)s,
    %(classification_provider)s,
    %(classification_base_url)s,
    %(classification_api_key_enc)s,
    %(classification_model)s,
    %(generation_provider)s,
    %(generation_base_url)s,
    %(generation_api_key_enc)s,
    %(generation_model)s,
    %(reply_language)s,
    %(transcription_budget_minutes)s)
ON CONFLICT (chatwoot_account_id) DO UPDATE SET
    transcription_provider = CASE WHEN %(transcription_provider_set)s THEN EXCLUDED.transcription_provider ELSE s.transcription_provider END,
    transcription_base_url = CASE WHEN %(transcription_base_url_set)s THEN EXCLUDED.transcription_base_url ELSE s.transcription_base_url END,
    transcription_api_key_enc = CASE WHEN %(transcription_api_key_enc_set)s THEN EXCLUDED.transcription_api_key_enc ELSE s.transcription_api_key_enc END,
    transcription_model = CASE WHEN %(transcription_model_set)s THEN EXCLUDED.transcription_model ELSE s.transcription_model END,
    transcription_language = CASE WHEN %(transcription_language_set)s THEN EXCLUDED.transcription_language ELSE s.transcription_language END,
    local_whisper_model = CASE WHEN %(local_whisper_model_set)s THEN EXCLUDED.local_whisper_model ELSE s.local_whisper_model END,
    classification_provider = CASE WHEN %(classification_provider_set)s THEN EXCLUDED.classification_provider ELSE s.classification_provider END,
    classification_base_url = CASE WHEN %(classification_base_url_set)s THEN EXCLUDED.classification_base_url ELSE s.classification_base_url END,
    classification_api_key_enc = CASE WHEN %(classification_api_key_enc_set)s THEN EXCLUDED.classification_api_key_enc ELSE s.classification_api_key_enc END,
    classification_model = CASE WHEN %(classification_model_set)s THEN EXCLUDED.classification_model ELSE s.classification_model END,
    generation_provider = CASE WHEN %(generation_provider_set)s THEN EXCLUDED.generation_provider ELSE s.generation_provider END,
    generation_base_url = CASE WHEN %(generation_base_url_set)s THEN EXCLUDED.generation_base_url ELSE s.generation_base_url END,
    generation_api_key_enc = CASE WHEN %(generation_api_key_enc_set)s THEN EXCLUDED.generation_api_key_enc ELSE s.generation_api_key_enc END,
    generation_model = CASE WHEN %(generation_model_set)s THEN EXCLUDED.generation_model ELSE s.generation_model END,
    reply_language = CASE WHEN %(reply_language_set)s THEN EXCLUDED.reply_language ELSE s.reply_language END,
    transcription_budget_minutes = CASE WHEN %(transcription_budget_minutes_set)s THEN EXCLUDED.transcription_budget_minutes ELSE s.transcription_budget_minutes END,
    updated_at = now()
RETURNING *;

-- name: ai_settings_delete
DELETE FROM account_ai_settings WHERE chatwoot_account_id = %(account_id)s;
