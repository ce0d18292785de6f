-- One-time link codes (only their HMAC is stored).

-- A new code replaces the user's earlier unused ones.
-- name: delete_unused_of_user
DELETE FROM link_codes WHERE user_id = %(user_id)s AND used_at IS NULL;

-- Codes used or expired more than a day ago are of no more use, even to explain a refusal.
-- name: delete_stale
DELETE FROM link_codes WHERE expires_at < now() - interval '1 day';

-- name: delete_inactive_hash
DELETE FROM link_codes
WHERE code_hash = %(code_hash)s AND (used_at IS NOT NULL OR expires_at <= now());

-- name: code_insert
INSERT INTO link_codes (user_id, chatwoot_account_id, code_hash, expires_at)
VALUES (%(user_id)s, %(account_id)s, %(code_hash)s, now() + make_interval(secs => %(ttl)s))
RETURNING id, expires_at;

-- Take a live code, once: two contacts sending it at the same moment cannot both get it.
-- name: code_claim
UPDATE link_codes
SET used_at = now(), used_by_account_id = %(account_id)s, used_by_contact_id = %(contact_id)s
WHERE code_hash = %(code_hash)s
  AND used_at IS NULL
  AND expires_at > now()
  AND (chatwoot_account_id IS NULL OR chatwoot_account_id = %(account_id)s)
RETURNING id, user_id;

-- name: unclaim
UPDATE link_codes SET used_at = NULL, used_by_account_id = NULL, used_by_contact_id = NULL
WHERE id = %(id)s;

-- name: get_by_hash
SELECT id, user_id, chatwoot_account_id, expires_at, used_at FROM link_codes WHERE code_hash = %(code_hash)s;
