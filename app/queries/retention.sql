-- Retention per Chatwoot account (migrations/0019, app/records/retention.py).

-- name: retention_policies
SELECT p.chatwoot_account_id, p.days, p.set_by, p.set_at,
       r.started_at AS last_run_at, r.status AS last_run_status, r.messages_deleted AS last_deleted,
       r.kept_on_hold AS last_kept_on_hold
FROM retention_policies p
LEFT JOIN LATERAL (
    SELECT started_at, status, messages_deleted, kept_on_hold FROM retention_runs
    WHERE chatwoot_account_id = p.chatwoot_account_id ORDER BY id DESC LIMIT 1
) r ON true
ORDER BY p.chatwoot_account_id;

-- name: retention_policy_get
SELECT chatwoot_account_id, days, set_by, set_at FROM retention_policies
WHERE chatwoot_account_id = %(account_id)s;

-- name: retention_policy_set
INSERT INTO retention_policies (chatwoot_account_id, days, set_by)
VALUES (%(account_id)s, %(days)s, %(set_by)s)
ON CONFLICT (chatwoot_account_id) DO UPDATE SET days = EXCLUDED.days, set_by = EXCLUDED.set_by, set_at = now()
RETURNING chatwoot_account_id, days, set_by, set_at;

-- name: retention_policy_delete
DELETE FROM retention_policies WHERE chatwoot_account_id = %(account_id)s
RETURNING chatwoot_account_id, days;

-- The cutoff comes from the database's clock, as created_at did, less a margin for skew.
-- name: retention_run_start
INSERT INTO retention_runs (chatwoot_account_id, days, cutoff)
VALUES (%(account_id)s, %(days)s,
        now() - make_interval(days => %(days)s) - make_interval(secs => %(margin_seconds)s))
RETURNING id, cutoff;

-- name: retention_run_finish
UPDATE retention_runs
SET finished_at = now(), status = %(status)s, messages_deleted = %(messages_deleted)s,
    objects_deleted = %(objects_deleted)s, kept_on_hold = %(kept_on_hold)s, holds = %(holds)s,
    error_details = %(error_details)s
WHERE id = %(run_id)s;

-- name: retention_runs_recent
SELECT id, chatwoot_account_id, days, cutoff, started_at, finished_at, status, messages_deleted,
       objects_deleted, kept_on_hold, holds, error_details
FROM retention_runs
ORDER BY id DESC
LIMIT %(limit)s;

-- Messages past the cutoff, archived (or given up on), of users not on hold: the next batch,
-- oldest first after the last one seen (the keyset skips what a hold keeps), with every object
-- kept for each.
-- name: retention_candidates
SELECT n.id, n.created_at, n.user_id, n.gcs_storage_path,
       (SELECT coalesce(array_agg(a.bucket_name || '/' || a.object_name), '{}')
          FROM message_attachments a
         WHERE a.meeting_note_id = n.id AND a.bucket_name IS NOT NULL AND a.object_name IS NOT NULL)
           AS attachment_objects,
       (SELECT coalesce(array_agg(u.gcs_storage_path), '{}')
          FROM message_updates u WHERE u.meeting_note_id = n.id AND u.gcs_storage_path IS NOT NULL)
           AS update_paths,
       (SELECT t.gcs_storage_path FROM transcriptions t WHERE t.meeting_note_id = n.id) AS transcript_path
FROM meeting_notes n
WHERE n.created_at < %(cutoff)s
  AND (n.created_at, n.id) > (%(after_at)s::timestamptz, %(after_id)s)
  AND n.chatwoot_account_id = %(account_id)s
  AND n.processing_status IN ('stored', 'error')
  AND (n.user_id IS NULL OR NOT EXISTS (
        SELECT 1 FROM legal_holds h WHERE h.user_id = n.user_id AND h.lifted_at IS NULL))
ORDER BY n.created_at, n.id
LIMIT %(limit)s;

-- The rows go once their objects are gone; a hold placed meanwhile keeps them.
-- name: retention_delete_notes
DELETE FROM meeting_notes n
WHERE n.id = ANY(%(ids)s)
  AND n.created_at < %(cutoff)s
  AND (n.user_id IS NULL OR NOT EXISTS (
        SELECT 1 FROM legal_holds h WHERE h.user_id = n.user_id AND h.lifted_at IS NULL))
RETURNING n.id;

-- Users on hold whose messages this run keeps, and the holds that keep them.
-- name: retention_kept_on_hold
SELECT n.user_id, count(*) AS messages,
       (SELECT jsonb_agg(jsonb_build_object('id', h.id, 'reason', h.reason) ORDER BY h.id)
          FROM legal_holds h WHERE h.user_id = n.user_id AND h.lifted_at IS NULL) AS holds
FROM meeting_notes n
WHERE n.chatwoot_account_id = %(account_id)s
  AND n.created_at < %(cutoff)s
  AND n.processing_status IN ('stored', 'error')
  AND n.user_id IN (SELECT user_id FROM legal_holds WHERE lifted_at IS NULL)
GROUP BY n.user_id
ORDER BY n.user_id;

-- Each bucket of ours and the Chatwoot accounts whose messages it holds: a user's bucket those of
-- its contact links, an account's fallback bucket (named from account_<id>) its own account.
-- name: retention_user_buckets
SELECT m.bucket_name, array_agg(DISTINCT l.chatwoot_account_id) FILTER (WHERE l.chatwoot_account_id IS NOT NULL)
           AS accounts,
       r.messages_age, r.exports_age
FROM user_bucket_mapping m
JOIN gcs_buckets b ON b.bucket_name = m.bucket_name AND b.state = 'ready'
LEFT JOIN contact_links l ON l.user_id = m.user_id
LEFT JOIN bucket_retention_rules r ON r.bucket_name = m.bucket_name
GROUP BY m.bucket_name, r.messages_age, r.exports_age
ORDER BY m.bucket_name;

-- name: retention_bucket_rules_get
SELECT b.bucket_name, r.messages_age, r.exports_age
FROM gcs_buckets b
LEFT JOIN bucket_retention_rules r ON r.bucket_name = b.bucket_name
WHERE b.bucket_name = ANY(%(buckets)s) AND b.state = 'ready';

-- name: retention_bucket_rules_set
INSERT INTO bucket_retention_rules (bucket_name, messages_age, exports_age)
VALUES (%(bucket_name)s, %(messages_age)s, %(exports_age)s)
ON CONFLICT (bucket_name) DO UPDATE
SET messages_age = EXCLUDED.messages_age, exports_age = EXCLUDED.exports_age, applied_at = now();

-- The delivery audit trail's partitions: the next days', and dropping those past retention.
-- name: audit_partitions_ensure
SELECT webhook_deliveries_ensure((now() AT TIME ZONE 'UTC')::date - 1, %(days)s) AS created;

-- name: audit_partitions_drop
SELECT webhook_deliveries_drop_before((now() AT TIME ZONE 'UTC')::date - %(keep_days)s) AS dropped;

-- Search vectors of rows archived before search existed, a range of ids at a time.
-- name: search_backfill_state
INSERT INTO search_backfill (upto_id)
SELECT coalesce(max(id), 0) FROM meeting_notes
ON CONFLICT (id) DO UPDATE SET upto_id = search_backfill.upto_id
RETURNING after_id, upto_id, finished_at;

-- name: search_backfill_range
UPDATE meeting_notes n
SET search_vector = search_document(
        (SELECT m.language FROM user_bucket_mapping m WHERE m.user_id = n.user_id), n.content, n.transcript)
WHERE n.id > %(after_id)s AND n.id <= %(to_id)s
  AND n.processing_status = 'stored' AND n.search_vector IS NULL;

-- name: search_backfill_advance
UPDATE search_backfill
SET after_id = %(to_id)s,
    finished_at = CASE WHEN %(to_id)s >= upto_id THEN now() END;

-- name: retention_buckets_with_exports
SELECT DISTINCT bucket_name FROM exports WHERE status <> 'deleted' AND bucket_name IS NOT NULL;

-- Chatwoot accounts that may have a fallback bucket.
-- name: retention_accounts
SELECT chatwoot_account_id FROM chatwoot_accounts
UNION
SELECT DISTINCT chatwoot_account_id FROM contact_links;
