-- Ingestion: stored payloads (a few KB of JSON each, compressed by PostgreSQL) use lz4, which
-- costs about a third less server CPU per webhook insert than the default pglz. Servers built
-- without lz4 keep pglz: the migration then changes nothing.
DO $$
BEGIN
    ALTER TABLE meeting_notes ALTER COLUMN payload SET COMPRESSION lz4;
    ALTER TABLE message_updates ALTER COLUMN payload SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
    RAISE NOTICE 'lz4 is not available on this server: payloads stay compressed with pglz';
END
$$;
