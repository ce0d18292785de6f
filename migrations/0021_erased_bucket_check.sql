-- Whether a bucket was an erased user's: erased_users (migrations/0013) is always there before
-- migrations/0019, so the check needs neither the table guard nor dynamic SQL of 0019's version.
CREATE OR REPLACE FUNCTION bucket_of_erased_user(p_bucket text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM erased_users WHERE bucket_name = p_bucket AND restored_at IS NULL)
$$;
