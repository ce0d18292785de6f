-- Legal holds (migrations/0019): one row per hold; on while lifted_at IS NULL.

-- name: hold_user
SELECT user_id, bucket_name FROM user_bucket_mapping WHERE user_id = %(user_id)s;

-- name: hold_bucket_erased
SELECT bucket_of_erased_user(%(bucket_name)s) AS erased;

-- name: holds_active
SELECT id, user_id, reason, placed_by, placed_at
FROM legal_holds
WHERE user_id = %(user_id)s AND lifted_at IS NULL
ORDER BY id;

-- name: holds_of_user
SELECT h.id, h.user_id, h.reason, h.placed_by, h.placed_at, h.lifted_by, h.lifted_at, h.lift_reason
FROM legal_holds h
WHERE h.user_id = %(user_id)s
ORDER BY h.id;

-- name: holds_all_active
SELECT h.id, h.user_id, h.reason, h.placed_by, h.placed_at, s.state AS storage_state,
       s.objects_changed, s.updated_at AS storage_updated_at
FROM legal_holds h
LEFT JOIN legal_hold_storage s ON s.user_id = h.user_id
WHERE h.lifted_at IS NULL
ORDER BY h.id;

-- name: hold_insert
INSERT INTO legal_holds (user_id, reason, placed_by)
VALUES (%(user_id)s, %(reason)s, %(placed_by)s)
RETURNING id, user_id, reason, placed_by, placed_at, lifted_by, lifted_at, lift_reason;

-- name: hold_lift
UPDATE legal_holds
SET lifted_at = now(), lifted_by = %(lifted_by)s, lift_reason = %(lift_reason)s
WHERE id = %(hold_id)s AND user_id = %(user_id)s AND lifted_at IS NULL
RETURNING id, user_id, reason, placed_by, placed_at, lifted_by, lifted_at, lift_reason;

-- name: hold_get
SELECT id, user_id, reason, placed_by, placed_at, lifted_by, lifted_at, lift_reason
FROM legal_holds WHERE id = %(hold_id)s;

-- The user's objects are to be held (or released): the holds job makes GCS match.
-- name: hold_storage_pending
INSERT INTO legal_hold_storage (user_id, bucket_name, state)
VALUES (%(user_id)s, %(bucket_name)s, 'pending')
ON CONFLICT (user_id) DO UPDATE SET state = 'pending', bucket_name = EXCLUDED.bucket_name, updated_at = clock_timestamp()
RETURNING updated_at;

-- name: hold_storage_get
SELECT s.user_id, s.bucket_name, s.state, s.updated_at,
       EXISTS (SELECT 1 FROM legal_holds h WHERE h.user_id = s.user_id AND h.lifted_at IS NULL) AS held
FROM legal_hold_storage s
WHERE s.user_id = %(user_id)s;

-- Written only when nothing changed the user's holds since the job read them.
-- name: hold_storage_done
UPDATE legal_hold_storage
SET state = %(state)s, objects_changed = %(objects_changed)s, error_details = %(error_details)s,
    updated_at = clock_timestamp()
WHERE user_id = %(user_id)s AND updated_at = %(seen)s
RETURNING state;

-- name: hold_storage_todo
SELECT h.id AS hold_id, s.user_id
FROM legal_hold_storage s
JOIN LATERAL (
    SELECT id FROM legal_holds WHERE user_id = s.user_id ORDER BY lifted_at IS NULL DESC, id DESC LIMIT 1
) h ON true
WHERE s.state IN ('pending', 'no_bucket', 'error')
ORDER BY s.updated_at
LIMIT %(limit)s;
