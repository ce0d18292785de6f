-- Erasure tombstones: an erased user's data never comes back through the webhook, the spool
-- replay, the Chatwoot backfill or an archive job that was already running, until the user
-- consents again (`flask users reconsent`, POST /admin/users/<id>/reconsent).
--
-- Neither table keeps anything that names the person: the user id and each contact key (contact
-- id, phone, identifier) are kept as keyed hashes (HMAC-SHA256 with BUCKET_HASH_SECRET, see
-- app/users/tombstones.py), the same kind of name the user's bucket already has.

-- One row per erased user; the bucket name tells archive jobs and bucket creation to refuse.
CREATE TABLE IF NOT EXISTS erased_users (
    user_hash text PRIMARY KEY,
    bucket_name text NOT NULL,
    erased_at timestamptz NOT NULL DEFAULT now(),
    erasures integer NOT NULL DEFAULT 1,
    -- Set by the user's re-consent; NULL while the erasure holds.
    restored_at timestamptz
);
CREATE INDEX IF NOT EXISTS erased_users_bucket_idx ON erased_users (bucket_name) WHERE restored_at IS NULL;

-- One row per contact key of an erased user, per Chatwoot account (as the user's contact links
-- were, and the contact ids seen on the user's messages). The ingest statement looks here.
CREATE TABLE IF NOT EXISTS erased_contacts (
    chatwoot_account_id integer NOT NULL,
    key_hash text NOT NULL,
    user_hash text NOT NULL REFERENCES erased_users (user_hash) ON DELETE CASCADE,
    erased_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (chatwoot_account_id, key_hash)
);
CREATE INDEX IF NOT EXISTS erased_contacts_user_idx ON erased_contacts (user_hash);
