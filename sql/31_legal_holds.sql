-- Legal holds on now (`flask users holds`): who placed each, why, and whether GCS holds the
-- user's objects yet (held, pending, no_bucket, error).
SELECT h.id,
       h.user_id,
       h.reason,
       h.placed_by,
       h.placed_at,
       s.state AS gcs,
       s.updated_at AS gcs_updated_at
FROM legal_holds h
LEFT JOIN legal_hold_storage s ON s.user_id = h.user_id
WHERE h.lifted_at IS NULL
ORDER BY h.placed_at;
