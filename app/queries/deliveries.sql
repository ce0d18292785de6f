-- The delivery audit trail (migrations/0019, app/ingest/audit.py): what admins read.

-- The writer's rows (app/ingest/audit.py), as many as psycopg2.extras.execute_values puts in
-- VALUES %s.
-- name: deliveries_insert
INSERT INTO webhook_deliveries (received_at, request_id, delivery_id, chatwoot_account_id,
                                chatwoot_message_id, event, note_id, update_id, signature,
                                http_status, outcome, reason, duration_ms, body_sha256, body_bytes)
VALUES %s;

-- name: deliveries_find
SELECT received_at, delivery_id, request_id, chatwoot_account_id, chatwoot_message_id, event,
       signature, http_status, outcome, reason, note_id, update_id, duration_ms, body_sha256,
       body_bytes
FROM webhook_deliveries
WHERE (%(message_id)s::text IS NULL OR chatwoot_message_id = %(message_id)s)
  AND (%(delivery_id)s::text IS NULL OR delivery_id = %(delivery_id)s)
  AND (%(account_id)s::integer IS NULL OR chatwoot_account_id = %(account_id)s)
  AND (%(since_days)s::integer IS NULL OR received_at >= now() - make_interval(days => %(since_days)s))
ORDER BY received_at, request_id
LIMIT %(limit)s;

-- name: deliveries_recent
SELECT received_at, delivery_id, request_id, chatwoot_account_id, chatwoot_message_id, event,
       signature, http_status, outcome, reason, note_id, update_id, duration_ms, body_sha256,
       body_bytes
FROM webhook_deliveries
WHERE received_at >= now() - make_interval(mins => %(minutes)s)
  AND (%(outcome)s::text IS NULL OR outcome = %(outcome)s)
  AND (%(http_status)s::integer IS NULL OR http_status = %(http_status)s)
ORDER BY received_at DESC, request_id
LIMIT %(limit)s;

-- What the archive holds of a Chatwoot message.
-- name: deliveries_message_rows
SELECT n.id AS note_id, n.chatwoot_account_id, n.chatwoot_message_id, n.created_at,
       n.processing_status, n.message_kind, n.user_id, n.gcs_storage_path,
       (SELECT count(*) FROM message_updates u WHERE u.meeting_note_id = n.id) AS updates
FROM meeting_notes n
WHERE n.chatwoot_message_id = %(message_id)s
  AND (%(account_id)s::integer IS NULL OR n.chatwoot_account_id = %(account_id)s)
ORDER BY n.id;
