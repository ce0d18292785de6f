-- Transcriptions: one row per voice note that reached a provider (or was skipped, or failed),
-- with what it cost: provider, model, seconds of audio, the provider's own time, and the
-- estimated cost priced at write time (TRANSCRIPTION_COST_PER_MINUTE, openai provider only),
-- so the monitoring query needs no setting.

CREATE TABLE transcriptions (
    meeting_note_id bigint PRIMARY KEY REFERENCES meeting_notes (id) ON DELETE CASCADE,
    status text NOT NULL CHECK (status IN ('done', 'failed', 'skipped')),
    -- openai, local, chatwoot (Chatwoot's own transcript was used) or none.
    provider text NOT NULL,
    model text,
    language text,
    audio_seconds numeric(12, 3) CHECK (audio_seconds >= 0),
    provider_seconds numeric(12, 3) CHECK (provider_seconds >= 0),
    -- Pieces sent (audio over the provider's limit is split) and provider calls made (retries).
    pieces integer NOT NULL DEFAULT 0,
    provider_calls integer NOT NULL DEFAULT 0,
    cost_per_minute numeric(12, 6) NOT NULL DEFAULT 0,
    estimated_cost numeric(14, 6) NOT NULL DEFAULT 0,
    -- gs://bucket/.../transcript.json once written.
    gcs_storage_path text,
    error_details text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX transcriptions_created_idx ON transcriptions (created_at);
