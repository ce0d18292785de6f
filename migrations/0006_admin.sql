-- Administration: one-time link codes, monitoring indexes, and roll-ups that keep the monitoring
-- queries fast on millions of rows. The roll-ups are kept current by triggers as the workers
-- store messages and attachments (never on the webhook's insert of a new message), and
-- `SELECT rebuild_monitoring_rollups()` recomputes them from the rows at any time.

-- A code a WhatsApp user sends as `LINK 123456` to link their number to a user. Only an HMAC of
-- the code is kept; a code is used once and expires after 10 minutes.
CREATE TABLE link_codes (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id text NOT NULL REFERENCES user_bucket_mapping (user_id) ON DELETE CASCADE,
    -- The account the code may be redeemed from; NULL: any account.
    chatwoot_account_id integer,
    code_hash text NOT NULL,
    expires_at timestamptz NOT NULL,
    used_at timestamptz,
    used_by_account_id integer,
    used_by_contact_id integer,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT link_codes_code_hash_key UNIQUE (code_hash)
);
CREATE INDEX link_codes_user_idx ON link_codes (user_id);

-- Monitoring indexes -------------------------------------------------------------------------

-- sql/01 (messages per day, WhatsApp) as an index-only scan, with statistics on the day so the
-- planner knows there are only a few dozen groups (hash aggregate, no sort of every row).
CREATE INDEX meeting_notes_whatsapp_day_idx ON meeting_notes (created_at, processing_status)
    WHERE source_type = 'whatsapp';
CREATE STATISTICS meeting_notes_day_stats ON ((date_trunc('day', created_at))::date) FROM meeting_notes;

-- Unmapped contacts (sql/02, sql/15, the admin page) without reading the messages themselves.
CREATE INDEX meeting_notes_unmapped_contact_idx
    ON meeting_notes (chatwoot_account_id, chatwoot_contact_id, id)
    INCLUDE (created_at, processing_status, source_type, message_type)
    WHERE user_id IS NULL;

-- Backlog of transcription and classification (sql/10) among archived messages.
CREATE INDEX meeting_notes_stage_backlog_idx
    ON meeting_notes (transcription_status, classification_status, updated_at)
    WHERE processing_status = 'stored'
      AND (transcription_status = 'pending' OR classification_status = 'pending');

CREATE INDEX orders_created_idx ON orders (created_at) INCLUDE (status, ready_at);
CREATE INDEX outbox_created_idx ON outbox (created_at) INCLUDE (kind, status);

-- Roll-ups ------------------------------------------------------------------------------------

-- Archived (stored) and failed (error) messages per UTC day of receipt and channel. Messages
-- still waiting ('received') are few and counted from the rows.
CREATE TABLE message_daily_stats (
    day date NOT NULL,
    source_type text NOT NULL,
    stored bigint NOT NULL DEFAULT 0,
    errors bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (day, source_type)
);

-- Time from received to stored per UTC day, as a histogram: bucket k holds the messages stored
-- within [1.1^k, 1.1^(k+1)) milliseconds (k = 0 also holds anything faster), so a percentile
-- read from it is within 5 % of the exact one.
CREATE TABLE stored_latency_daily (
    day date NOT NULL,
    bucket smallint NOT NULL,
    messages bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (day, bucket)
);

-- Archived messages per user (messages of unmapped contacts are not counted until re-homed).
CREATE TABLE user_storage_stats (
    user_id text PRIMARY KEY,
    messages bigint NOT NULL DEFAULT 0,
    last_message_at timestamptz
);

-- Stored attachment files and their bytes per bucket.
CREATE TABLE bucket_storage_stats (
    bucket_name text PRIMARY KEY,
    attachments bigint NOT NULL DEFAULT 0,
    bytes bigint NOT NULL DEFAULT 0
);

CREATE FUNCTION stored_latency_bucket(received timestamptz, stored timestamptz) RETURNS smallint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT least(32767, greatest(0, floor(ln(greatest(1.0,
        extract(epoch FROM stored - received) * 1000)::float8) / ln(1.1))))::smallint
$$;

-- Adds (sign = 1) or removes (sign = -1) one message row from the roll-ups: the daily ones, the
-- per-user one, or both.
CREATE FUNCTION rollup_message(r meeting_notes, sign integer, daily boolean, per_user boolean)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    d date := (r.created_at AT TIME ZONE 'UTC')::date;
BEGIN
    IF r.processing_status = 'stored' THEN
        IF daily THEN
            INSERT INTO message_daily_stats AS s (day, source_type, stored)
            VALUES (d, r.source_type, sign)
            ON CONFLICT (day, source_type) DO UPDATE SET stored = s.stored + sign;
            IF r.stored_at IS NOT NULL THEN
                INSERT INTO stored_latency_daily AS s (day, bucket, messages)
                VALUES (d, stored_latency_bucket(r.created_at, r.stored_at), sign)
                ON CONFLICT (day, bucket) DO UPDATE SET messages = s.messages + sign;
            END IF;
        END IF;
        IF per_user AND r.user_id IS NOT NULL THEN
            INSERT INTO user_storage_stats AS s (user_id, messages, last_message_at)
            VALUES (r.user_id, sign, CASE WHEN sign > 0 THEN r.created_at END)
            ON CONFLICT (user_id) DO UPDATE SET
                messages = s.messages + sign,
                last_message_at = CASE WHEN sign > 0
                    THEN greatest(s.last_message_at, EXCLUDED.last_message_at)
                    ELSE s.last_message_at END;
        END IF;
    ELSIF r.processing_status = 'error' AND daily THEN
        INSERT INTO message_daily_stats AS s (day, source_type, errors)
        VALUES (d, r.source_type, sign)
        ON CONFLICT (day, source_type) DO UPDATE SET errors = s.errors + sign;
    END IF;
END
$$;

CREATE FUNCTION meeting_notes_rollup_trigger() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    daily boolean := true;
    per_user boolean := true;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        -- Only what changed: re-homing (user_id) leaves the daily rows alone.
        daily := OLD.processing_status IS DISTINCT FROM NEW.processing_status
            OR OLD.stored_at IS DISTINCT FROM NEW.stored_at
            OR OLD.created_at IS DISTINCT FROM NEW.created_at
            OR OLD.source_type IS DISTINCT FROM NEW.source_type;
        per_user := OLD.processing_status IS DISTINCT FROM NEW.processing_status
            OR OLD.user_id IS DISTINCT FROM NEW.user_id
            OR OLD.created_at IS DISTINCT FROM NEW.created_at;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM rollup_message(OLD, -1, daily, per_user);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM rollup_message(NEW, 1, daily, per_user);
    END IF;
    RETURN NULL;
END
$$;

-- A new message from the webhook is 'received': its insert does not touch the roll-ups.
CREATE TRIGGER meeting_notes_rollup_insert AFTER INSERT ON meeting_notes
    FOR EACH ROW WHEN (NEW.processing_status <> 'received')
    EXECUTE FUNCTION meeting_notes_rollup_trigger();
CREATE TRIGGER meeting_notes_rollup_update
    AFTER UPDATE OF processing_status, user_id, stored_at, created_at, source_type ON meeting_notes
    FOR EACH ROW WHEN (
        OLD.processing_status IS DISTINCT FROM NEW.processing_status
        OR (NEW.processing_status <> 'received' AND (
            OLD.user_id IS DISTINCT FROM NEW.user_id
            OR OLD.stored_at IS DISTINCT FROM NEW.stored_at
            OR OLD.created_at IS DISTINCT FROM NEW.created_at
            OR OLD.source_type IS DISTINCT FROM NEW.source_type)))
    EXECUTE FUNCTION meeting_notes_rollup_trigger();
CREATE TRIGGER meeting_notes_rollup_delete AFTER DELETE ON meeting_notes
    FOR EACH ROW WHEN (OLD.processing_status <> 'received')
    EXECUTE FUNCTION meeting_notes_rollup_trigger();

CREATE FUNCTION message_attachments_rollup_trigger() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.status = 'stored' AND OLD.bucket_name IS NOT NULL THEN
        INSERT INTO bucket_storage_stats AS s (bucket_name, attachments, bytes)
        VALUES (OLD.bucket_name, -1, -coalesce(OLD.size_bytes, 0))
        ON CONFLICT (bucket_name) DO UPDATE SET
            attachments = s.attachments - 1, bytes = s.bytes - coalesce(OLD.size_bytes, 0);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.status = 'stored' AND NEW.bucket_name IS NOT NULL THEN
        INSERT INTO bucket_storage_stats AS s (bucket_name, attachments, bytes)
        VALUES (NEW.bucket_name, 1, coalesce(NEW.size_bytes, 0))
        ON CONFLICT (bucket_name) DO UPDATE SET
            attachments = s.attachments + 1, bytes = s.bytes + coalesce(NEW.size_bytes, 0);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER message_attachments_rollup AFTER INSERT OR DELETE OR UPDATE OF status, bucket_name, size_bytes
    ON message_attachments
    FOR EACH ROW EXECUTE FUNCTION message_attachments_rollup_trigger();

-- Recompute every roll-up from the rows (after a bulk load, or to repair). Writers wait for it.
CREATE FUNCTION rebuild_monitoring_rollups() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    LOCK TABLE message_daily_stats, stored_latency_daily, user_storage_stats, bucket_storage_stats
        IN ACCESS EXCLUSIVE MODE;
    LOCK TABLE meeting_notes, message_attachments IN SHARE MODE;
    DELETE FROM message_daily_stats;
    DELETE FROM stored_latency_daily;
    DELETE FROM user_storage_stats;
    DELETE FROM bucket_storage_stats;
    INSERT INTO message_daily_stats (day, source_type, stored, errors)
    SELECT (created_at AT TIME ZONE 'UTC')::date, source_type,
           count(*) FILTER (WHERE processing_status = 'stored'),
           count(*) FILTER (WHERE processing_status = 'error')
      FROM meeting_notes WHERE processing_status <> 'received'
     GROUP BY 1, 2;
    INSERT INTO stored_latency_daily (day, bucket, messages)
    SELECT (created_at AT TIME ZONE 'UTC')::date, stored_latency_bucket(created_at, stored_at), count(*)
      FROM meeting_notes WHERE processing_status = 'stored' AND stored_at IS NOT NULL
     GROUP BY 1, 2;
    INSERT INTO user_storage_stats (user_id, messages, last_message_at)
    SELECT user_id, count(*), max(created_at)
      FROM meeting_notes WHERE processing_status = 'stored' AND user_id IS NOT NULL
     GROUP BY 1;
    INSERT INTO bucket_storage_stats (bucket_name, attachments, bytes)
    SELECT bucket_name, count(*), coalesce(sum(size_bytes), 0)
      FROM message_attachments WHERE status = 'stored' AND bucket_name IS NOT NULL
     GROUP BY 1;
END
$$;

-- Databases that already hold messages start with correct roll-ups.
DO $$ BEGIN PERFORM rebuild_monitoring_rollups(); END $$;
