-- name: account_get
SELECT * FROM chatwoot_accounts WHERE chatwoot_account_id = %(account_id)s;

-- name: list
SELECT a.*,
       COALESCE((SELECT json_agg(json_build_object(
                        'inbox_id', s.inbox_id, 'secret_enc', s.secret_enc,
                        'previous_secret_enc', s.previous_secret_enc) ORDER BY s.inbox_id)
                 FROM chatwoot_inbox_secrets s
                 WHERE s.chatwoot_account_id = a.chatwoot_account_id), '[]') AS inbox_secrets
FROM chatwoot_accounts a
ORDER BY a.chatwoot_account_id;

-- name: upsert
-- A new webhook secret moves the current one to previous_webhook_secret_enc (rotation).
INSERT INTO chatwoot_accounts AS a
    (chatwoot_account_id, name, base_url, api_access_token_enc, webhook_secret_enc, inbox_ids, url_token_enc,
     user_access_token_enc, ready_template_name, ready_template_language, ready_template_category,
     ready_template_params)
VALUES (%(account_id)s, %(name)s, %(base_url)s, %(api_token_enc)s, %(webhook_secret_enc)s, %(inbox_ids)s,
        %(url_token_enc)s, %(user_token_enc)s, %(template_name)s, %(template_language)s,
        %(template_category)s, %(template_params)s)
ON CONFLICT (chatwoot_account_id) DO UPDATE SET
    name = COALESCE(EXCLUDED.name, a.name),
    base_url = COALESCE(EXCLUDED.base_url, a.base_url),
    api_access_token_enc = COALESCE(EXCLUDED.api_access_token_enc, a.api_access_token_enc),
    previous_webhook_secret_enc = CASE WHEN EXCLUDED.webhook_secret_enc IS NOT NULL
        THEN a.webhook_secret_enc ELSE a.previous_webhook_secret_enc END,
    webhook_secret_enc = COALESCE(EXCLUDED.webhook_secret_enc, a.webhook_secret_enc),
    inbox_ids = COALESCE(EXCLUDED.inbox_ids, a.inbox_ids),
    url_token_enc = COALESCE(EXCLUDED.url_token_enc, a.url_token_enc),
    user_access_token_enc = COALESCE(EXCLUDED.user_access_token_enc, a.user_access_token_enc),
    ready_template_name = COALESCE(EXCLUDED.ready_template_name, a.ready_template_name),
    ready_template_language = COALESCE(EXCLUDED.ready_template_language, a.ready_template_language),
    ready_template_category = COALESCE(EXCLUDED.ready_template_category, a.ready_template_category),
    ready_template_params = COALESCE(EXCLUDED.ready_template_params, a.ready_template_params),
    updated_at = now()
RETURNING *;

-- name: drop_previous_secret
UPDATE chatwoot_accounts SET previous_webhook_secret_enc = NULL, updated_at = now()
WHERE chatwoot_account_id = %(account_id)s AND previous_webhook_secret_enc IS NOT NULL;

-- name: delete
DELETE FROM chatwoot_accounts WHERE chatwoot_account_id = %(account_id)s;

-- A new inbox secret keeps the current one as the previous (rotation).
-- name: inbox_secret_set
INSERT INTO chatwoot_inbox_secrets AS s (chatwoot_account_id, inbox_id, secret_enc)
VALUES (%(account_id)s, %(inbox_id)s, %(secret_enc)s)
ON CONFLICT (chatwoot_account_id, inbox_id) DO UPDATE SET
    previous_secret_enc = s.secret_enc,
    secret_enc = EXCLUDED.secret_enc,
    updated_at = now()
RETURNING inbox_id;

-- name: inbox_secret_finish_rotation
UPDATE chatwoot_inbox_secrets SET previous_secret_enc = NULL, updated_at = now()
WHERE chatwoot_account_id = %(account_id)s AND inbox_id = %(inbox_id)s AND previous_secret_enc IS NOT NULL;

-- name: inbox_secret_delete
DELETE FROM chatwoot_inbox_secrets WHERE chatwoot_account_id = %(account_id)s AND inbox_id = %(inbox_id)s;
