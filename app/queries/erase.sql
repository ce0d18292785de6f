-- Erasure tombstones (migrations/0013) and what the erasure reads beyond admin.sql's.

-- Recording tombstones waits for every ingest statement in flight (each reads erased_contacts
-- until it commits) and holds new ones back until the tombstones are committed: a message that
-- did not see them is committed, and found by the erasure, before the erasure looks.
-- name: tombstone_fence
SET LOCAL lock_timeout = '10s';
LOCK TABLE erased_contacts IN ACCESS EXCLUSIVE MODE;

-- name: tombstone_user
INSERT INTO erased_users (user_hash, bucket_name)
VALUES (%(user_hash)s, %(bucket_name)s)
ON CONFLICT (user_hash) DO UPDATE
SET bucket_name = EXCLUDED.bucket_name,
    erased_at = CASE WHEN erased_users.restored_at IS NULL THEN erased_users.erased_at ELSE now() END,
    erasures = erased_users.erasures + CASE WHEN erased_users.restored_at IS NULL THEN 0 ELSE 1 END,
    restored_at = NULL;

-- name: tombstone_contacts
INSERT INTO erased_contacts (chatwoot_account_id, key_hash, user_hash)
SELECT account_id, key_hash, %(user_hash)s
FROM unnest(%(accounts)s::integer[], %(keys)s::text[]) AS k (account_id, key_hash)
ON CONFLICT (chatwoot_account_id, key_hash) DO UPDATE SET user_hash = EXCLUDED.user_hash;

-- name: tombstoned_contacts
SELECT count(*) AS n FROM erased_contacts WHERE user_hash = %(user_hash)s;

-- The user's re-consent: the erasure stops holding (the row stays, as a record of both).
-- name: tombstone_lift
UPDATE erased_users
SET restored_at = now()
WHERE user_hash = %(user_hash)s AND restored_at IS NULL
RETURNING erased_at, restored_at;

-- name: tombstone_release_contacts
DELETE FROM erased_contacts WHERE user_hash = %(user_hash)s;

-- Which of these buckets are erased users' (bucket_of_erased_user(), migrations/0021, is the
-- rule): a batch of the archive asks once for all its messages' buckets. Prepared once per
-- connection; run with execute_erased_buckets.
-- name: prepare_erased_buckets
PREPARE erase_erased_buckets (text[]) AS
SELECT name AS bucket_name FROM unnest($1) AS name WHERE bucket_of_erased_user(name);
-- name: execute_erased_buckets
EXECUTE erase_erased_buckets (%(names)s::text[]);

-- An archive job's check before it writes: the message is gone (erased), or its bucket is an
-- erased user's. Prepared once per connection and run in one round trip (it runs for every
-- message archived); run with execute_write_fence.
-- name: prepare_write_fence
PREPARE erase_write_fence (bigint, text) AS
SELECT NOT EXISTS (SELECT FROM meeting_notes WHERE id = $1) AS gone, bucket_of_erased_user($2) AS erased;
-- name: execute_write_fence
EXECUTE erase_write_fence (%(note_id)s, %(bucket_name)s);

-- name: account_contact_keys
SELECT key_hash FROM erased_contacts WHERE chatwoot_account_id = %(account_id)s;

-- The contacts seen on the user's messages (tombstoned beside the user's links).
-- name: user_contacts_seen
SELECT DISTINCT chatwoot_account_id, chatwoot_contact_id
FROM meeting_notes
WHERE user_id = %(user_id)s AND chatwoot_contact_id IS NOT NULL;

-- Where each of the user's messages is named in a bucket: copies may be left in an account's
-- fallback bucket by a move into the user's bucket (soft-deleted, or not deleted yet).
-- name: user_messages
SELECT chatwoot_account_id, chatwoot_message_id, message_created_at, created_at, gcs_storage_path,
       rehome_from_bucket
FROM meeting_notes
WHERE user_id = %(user_id)s;
