-- Records: legal holds, exports of a user's archive, retention per account, the delivery audit
-- trail and full-text search (app/records/, app/ingest/audit.py).

-- Legal holds ---------------------------------------------------------------------------------

-- A hold keeps everything of a user: erasure, retention deletes and the deletion of the user's
-- exports are refused while one is on (lifted_at IS NULL). The rows stay after the hold is lifted,
-- as the record of it; they go with the user when the user is erased.
CREATE TABLE IF NOT EXISTS legal_holds (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id text NOT NULL REFERENCES user_bucket_mapping (user_id) ON DELETE CASCADE,
    reason text NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
    placed_by text NOT NULL CHECK (length(placed_by) BETWEEN 1 AND 200),
    placed_at timestamptz NOT NULL DEFAULT now(),
    lifted_by text CHECK (length(lifted_by) BETWEEN 1 AND 200),
    lifted_at timestamptz,
    lift_reason text CHECK (length(lift_reason) <= 500),
    CHECK ((lifted_at IS NULL) = (lifted_by IS NULL))
);
CREATE INDEX IF NOT EXISTS legal_holds_active_idx ON legal_holds (user_id) WHERE lifted_at IS NULL;
CREATE INDEX IF NOT EXISTS legal_holds_user_idx ON legal_holds (user_id, placed_at);

-- What GCS holds for a user: the bucket's default event-based hold and each object's temporary
-- hold, set (or released) by the holds job to match the user's holds.
CREATE TABLE IF NOT EXISTS legal_hold_storage (
    user_id text PRIMARY KEY REFERENCES user_bucket_mapping (user_id) ON DELETE CASCADE,
    bucket_name text NOT NULL,
    -- 'held' (every object held, new ones get the bucket's default hold), 'released', 'no_bucket'
    -- (nothing written yet: set when the bucket exists), 'pending' (to do) or 'error'.
    state text NOT NULL CHECK (state IN ('pending', 'held', 'released', 'no_bucket', 'error')),
    objects_changed integer NOT NULL DEFAULT 0,
    error_details text,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS legal_hold_storage_todo_idx ON legal_hold_storage (updated_at)
    WHERE state IN ('pending', 'no_bucket', 'error');

-- The last line of defence: no statement deletes a user while a hold is on (the service refuses
-- earlier, with the same words).
CREATE OR REPLACE FUNCTION legal_hold_refuse_user_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    hold record;
BEGIN
    SELECT id, reason, placed_by INTO hold
      FROM legal_holds WHERE user_id = OLD.user_id AND lifted_at IS NULL
     ORDER BY id LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'user % is on legal hold #% (%, placed by %)', OLD.user_id, hold.id, hold.reason,
            hold.placed_by
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN OLD;
END
$$;
DROP TRIGGER IF EXISTS user_bucket_mapping_legal_hold ON user_bucket_mapping;
CREATE TRIGGER user_bucket_mapping_legal_hold BEFORE DELETE ON user_bucket_mapping
    FOR EACH ROW EXECUTE FUNCTION legal_hold_refuse_user_delete();

-- True when the bucket belongs to a user whose erasure holds (the erasure's tombstones, when that
-- table exists); a hold on such a user is refused as "erased" rather than "unknown".
CREATE OR REPLACE FUNCTION bucket_of_erased_user(p_bucket text) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
DECLARE
    found boolean;
BEGIN
    IF to_regclass('erased_users') IS NULL THEN
        RETURN false;
    END IF;
    EXECUTE 'SELECT EXISTS (SELECT 1 FROM erased_users WHERE bucket_name = $1 AND restored_at IS NULL)'
        INTO found USING p_bucket;
    RETURN found;
END
$$;

-- Exports -------------------------------------------------------------------------------------

-- One export of a user's archive: a zip in the user's bucket under exports/, built by a job.
CREATE TABLE IF NOT EXISTS exports (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id text NOT NULL REFERENCES user_bucket_mapping (user_id) ON DELETE CASCADE,
    status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'running', 'done', 'failed', 'deleted')),
    requested_by text NOT NULL CHECK (length(requested_by) BETWEEN 1 AND 200),
    requested_at timestamptz NOT NULL DEFAULT now(),
    attempts integer NOT NULL DEFAULT 0,
    bucket_name text,
    object_name text,
    size_bytes bigint,
    sha256 text,
    -- Counts, time range and what was missing (the zip's manifest.json also lists every file).
    summary jsonb,
    error_details text,
    started_at timestamptz,
    finished_at timestamptz,
    expires_at timestamptz,
    deleted_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS exports_user_idx ON exports (user_id, requested_at);
CREATE INDEX IF NOT EXISTS exports_expiring_idx ON exports (expires_at) WHERE status = 'done';
CREATE INDEX IF NOT EXISTS exports_unfinished_idx ON exports (updated_at)
    WHERE status IN ('pending', 'running');

-- Who did what with an export, when: requested, built, failed, url (a signed URL handed out),
-- deleted, refused (a deletion refused by a legal hold).
CREATE TABLE IF NOT EXISTS export_events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    export_id bigint NOT NULL REFERENCES exports (id) ON DELETE CASCADE,
    event text NOT NULL CHECK (event IN ('requested', 'built', 'failed', 'url', 'deleted', 'refused')),
    actor text NOT NULL,
    at timestamptz NOT NULL DEFAULT now(),
    detail jsonb
);
CREATE INDEX IF NOT EXISTS export_events_export_idx ON export_events (export_id, at);

-- Retention -----------------------------------------------------------------------------------

-- "Delete messages older than N days", per Chatwoot account; no row: kept for ever (the default).
CREATE TABLE IF NOT EXISTS retention_policies (
    chatwoot_account_id integer PRIMARY KEY CHECK (chatwoot_account_id > 0),
    days integer NOT NULL CHECK (days BETWEEN 1 AND 36500),
    set_by text NOT NULL,
    set_at timestamptz NOT NULL DEFAULT now()
);

-- Each run of retention for an account: what it deleted and what a legal hold kept.
CREATE TABLE IF NOT EXISTS retention_runs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    chatwoot_account_id integer NOT NULL,
    days integer NOT NULL,
    cutoff timestamptz NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    status text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'done', 'error')),
    messages_deleted integer NOT NULL DEFAULT 0,
    objects_deleted integer NOT NULL DEFAULT 0,
    kept_on_hold integer NOT NULL DEFAULT 0,
    holds jsonb,
    error_details text
);
CREATE INDEX IF NOT EXISTS retention_runs_account_idx ON retention_runs (chatwoot_account_id, started_at);

-- The lifecycle Delete rules last set on each bucket (so that a bucket is patched only when its
-- rule changes); forgotten with the bucket.
CREATE TABLE IF NOT EXISTS bucket_retention_rules (
    bucket_name text PRIMARY KEY REFERENCES gcs_buckets (bucket_name) ON DELETE CASCADE,
    messages_age integer,
    exports_age integer,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- The delivery audit trail --------------------------------------------------------------------

-- One row per webhook delivery, written in batches by each web process (never in the request
-- path). Daily partitions (UTC); the cron process creates the next days' and drops those older
-- than AUDIT_RETENTION_DAYS. Never the body or a secret: its SHA-256 and size.
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    received_at timestamptz NOT NULL,
    request_id text NOT NULL,
    delivery_id text,
    chatwoot_account_id integer,
    chatwoot_message_id text,
    event text,
    note_id bigint,
    update_id bigint,
    -- valid, invalid, url_token, url_token_invalid, missing, unsigned, deferred or not_checked.
    signature text NOT NULL,
    http_status smallint NOT NULL,
    outcome text NOT NULL,
    reason text,
    duration_ms real NOT NULL,
    body_sha256 text,
    body_bytes integer
) PARTITION BY RANGE (received_at);
CREATE INDEX IF NOT EXISTS webhook_deliveries_message_idx
    ON webhook_deliveries (chatwoot_message_id) WHERE chatwoot_message_id IS NOT NULL;

CREATE OR REPLACE FUNCTION webhook_deliveries_partition(p_day date) RETURNS text
LANGUAGE sql IMMUTABLE AS $$ SELECT 'webhook_deliveries_' || to_char(p_day, 'YYYYMMDD') $$;

-- Create the partitions of `p_days` days from `p_from` that do not exist yet; return how many.
CREATE OR REPLACE FUNCTION webhook_deliveries_ensure(p_from date, p_days integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    d date;
    made integer := 0;
BEGIN
    FOR d IN SELECT generate_series(p_from, p_from + p_days - 1, interval '1 day')::date LOOP
        IF to_regclass(webhook_deliveries_partition(d)) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE IF NOT EXISTS %I PARTITION OF webhook_deliveries FOR VALUES FROM (%L) TO (%L)',
                webhook_deliveries_partition(d),
                (d::timestamp AT TIME ZONE 'UTC'),
                ((d + 1)::timestamp AT TIME ZONE 'UTC'));
            made := made + 1;
        END IF;
    END LOOP;
    RETURN made;
END
$$;

-- Drop the partitions of days before `p_day`; return their names.
CREATE OR REPLACE FUNCTION webhook_deliveries_drop_before(p_day date) RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    part text;
BEGIN
    FOR part IN
        SELECT c.relname::text
          FROM pg_inherits i
          JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'webhook_deliveries'::regclass
           AND c.relname ~ '^webhook_deliveries_[0-9]{8}$'
           AND to_date(right(c.relname, 8), 'YYYYMMDD') < p_day
         ORDER BY 1
    LOOP
        EXECUTE format('DROP TABLE IF EXISTS %I', part);
        RETURN NEXT part;
    END LOOP;
END
$$;

DO $$ BEGIN PERFORM webhook_deliveries_ensure((now() AT TIME ZONE 'UTC')::date - 1, 9); END $$;

-- Search --------------------------------------------------------------------------------------

-- Full-text search of archived messages: content and transcript, as `simple` words (every
-- language) and, when the user's language is known, as that language's stems too. Kept in a
-- column by a trigger when a row is archived or changes, never on the webhook's insert (a new
-- message is 'received'); rows archived before this migration are filled by the cron process.
ALTER TABLE meeting_notes ADD COLUMN IF NOT EXISTS search_vector tsvector;

CREATE OR REPLACE FUNCTION search_config(p_language text) RETURNS regconfig
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE p_language WHEN 'en' THEN 'english'::regconfig WHEN 'pt' THEN 'portuguese'::regconfig
                           WHEN 'es' THEN 'spanish'::regconfig ELSE 'simple'::regconfig END
$$;

CREATE OR REPLACE FUNCTION search_document(p_language text, p_content text, p_transcript text)
RETURNS tsvector
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN search_config(p_language) = 'simple'::regconfig THEN d.simple
                ELSE d.simple || to_tsvector(search_config(p_language), d.doc) END
      FROM (SELECT doc, to_tsvector('simple', doc) AS simple
              FROM (SELECT left(concat_ws(' ', p_content, p_transcript), 100000) AS doc) AS t) AS d
$$;

CREATE OR REPLACE FUNCTION meeting_notes_search_trigger() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.search_vector := search_document(
        (SELECT language FROM user_bucket_mapping WHERE user_id = NEW.user_id), NEW.content, NEW.transcript);
    RETURN NEW;
END
$$;
DROP TRIGGER IF EXISTS meeting_notes_search_insert ON meeting_notes;
CREATE TRIGGER meeting_notes_search_insert BEFORE INSERT ON meeting_notes
    FOR EACH ROW WHEN (NEW.processing_status = 'stored')
    EXECUTE FUNCTION meeting_notes_search_trigger();
DROP TRIGGER IF EXISTS meeting_notes_search_update ON meeting_notes;
CREATE TRIGGER meeting_notes_search_update
    BEFORE UPDATE OF processing_status, user_id, content, transcript ON meeting_notes
    FOR EACH ROW WHEN (
        NEW.processing_status = 'stored' AND (
            OLD.processing_status IS DISTINCT FROM NEW.processing_status
            OR OLD.user_id IS DISTINCT FROM NEW.user_id
            OR OLD.content IS DISTINCT FROM NEW.content
            OR OLD.transcript IS DISTINCT FROM NEW.transcript))
    EXECUTE FUNCTION meeting_notes_search_trigger();

-- The words, with the user, contact and channel a search is narrowed by (btree_gin, a contrib
-- extension the database owner may create): the index alone finds the matches of one user or one
-- contact, without reading every message that has the word. Built while no row has a vector
-- yet: a scan of the table, no sorting or inserting.
CREATE EXTENSION IF NOT EXISTS btree_gin;
CREATE INDEX IF NOT EXISTS meeting_notes_search_idx
    ON meeting_notes USING gin (search_vector, user_id, chatwoot_contact_id, source_type)
    WHERE search_vector IS NOT NULL;

-- How far the cron process has filled search_vector for rows archived before this migration.
CREATE TABLE IF NOT EXISTS search_backfill (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    after_id bigint NOT NULL DEFAULT 0,
    upto_id bigint NOT NULL,
    finished_at timestamptz
);
INSERT INTO search_backfill (upto_id)
SELECT coalesce(max(id), 0) FROM meeting_notes
ON CONFLICT (id) DO NOTHING;

-- The words of a search as a query: `simple` words, or the stems of each language given (a
-- language that reads the words as `simple` does adds nothing: the planner would count them twice).
CREATE OR REPLACE FUNCTION search_query(p_words text, p_languages text[]) RETURNS tsquery
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    found tsquery := websearch_to_tsquery('simple', p_words);
    seen text[] := ARRAY[found::text];
    other tsquery;
    lang text;
BEGIN
    FOREACH lang IN ARRAY coalesce(p_languages, '{}'::text[]) LOOP
        IF search_config(lang) <> 'simple'::regconfig THEN
            other := websearch_to_tsquery(search_config(lang), p_words);
            IF other::text <> '' AND NOT other::text = ANY(seen) THEN
                found := found || other;
                seen := seen || other::text;
            END IF;
        END IF;
    END LOOP;
    RETURN found;
END
$$;
