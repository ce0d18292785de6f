-- Transcription of voice notes (workers/transcribe.py).

-- name: note_claim
-- The note, its user's language, its audio attachments and any transcript of Chatwoot's own, in
-- one round trip, and the note's transcription lock: a session lock, released by `unlock` or by
-- PostgreSQL when the connection ends (a worker that dies holds nothing). `locked` is false
-- while another run holds it.
SELECT pg_try_advisory_lock(hashtextextended('transcribe:' || n.id::text, 0)) AS locked,
       n.id, n.chatwoot_account_id, n.chatwoot_message_id, n.chatwoot_conversation_id, n.user_id,
       n.message_created_at, n.payload, n.processing_status, n.transcription_status,
       n.classification_status, n.transcript, n.gcs_storage_path,
       coalesce(u.language, c.language) AS language,
       (SELECT coalesce(jsonb_agg(jsonb_build_object(
                   'chatwoot_attachment_id', a.chatwoot_attachment_id, 'status', a.status,
                   'bucket_name', a.bucket_name, 'object_name', a.object_name,
                   'error_details', a.error_details) ORDER BY a.chatwoot_attachment_id), '[]'::jsonb)
          FROM message_attachments a
         WHERE a.meeting_note_id = n.id
           AND (a.file_type = 'audio' OR a.content_type LIKE 'audio/%%')) AS audio_attachments,
       -- Chatwoot's transcript of each attachment: the latest non-empty `transcribed_text` in the
       -- message as created or in any update of it.
       (SELECT coalesce(jsonb_agg(jsonb_build_object('attachment_id', t.attachment_id, 'text', t.text)
                                  ORDER BY t.attachment_id), '[]'::jsonb)
          FROM (SELECT DISTINCT ON (found.attachment_id) found.attachment_id, found.text
                  FROM (SELECT a ->> 'id' AS attachment_id, btrim(a ->> 'transcribed_text') AS text, 0::bigint AS seq
                          FROM jsonb_array_elements(
                                   CASE WHEN jsonb_typeof(n.payload -> 'attachments') = 'array'
                                        THEN n.payload -> 'attachments' ELSE '[]'::jsonb END) AS a
                        UNION ALL
                        SELECT a ->> 'id', btrim(a ->> 'transcribed_text'), m.id
                          FROM message_updates m,
                               jsonb_array_elements(
                                   CASE WHEN jsonb_typeof(m.payload -> 'attachments') = 'array'
                                        THEN m.payload -> 'attachments' ELSE '[]'::jsonb END) AS a
                         WHERE m.meeting_note_id = n.id) AS found
                 WHERE coalesce(found.text, '') <> ''
                 ORDER BY found.attachment_id, found.seq DESC) AS t) AS chatwoot_transcripts
FROM meeting_notes n
LEFT JOIN user_bucket_mapping u ON u.user_id = n.user_id
LEFT JOIN conversations c
       ON c.chatwoot_account_id = n.chatwoot_account_id
      AND c.chatwoot_conversation_id = n.chatwoot_conversation_id
WHERE n.id = %(id)s;

-- name: note
-- The note and the language of its user (their own setting first, then the conversation's).
SELECT n.id, n.chatwoot_account_id, n.chatwoot_message_id, n.chatwoot_conversation_id, n.user_id,
       n.message_created_at, n.payload, n.processing_status, n.transcription_status,
       n.classification_status, n.transcript, n.gcs_storage_path,
       coalesce(u.language, c.language) AS language
FROM meeting_notes n
LEFT JOIN user_bucket_mapping u ON u.user_id = n.user_id
LEFT JOIN conversations c
       ON c.chatwoot_account_id = n.chatwoot_account_id
      AND c.chatwoot_conversation_id = n.chatwoot_conversation_id
WHERE n.id = %(id)s;

-- name: unlock
-- Releases `claim`'s lock.
SELECT pg_advisory_unlock(hashtextextended('transcribe:' || %(id)s::text, 0)) AS unlocked;

-- name: audio_attachments
SELECT chatwoot_attachment_id, file_type, content_type, size_bytes, bucket_name, object_name, status,
       error_details
FROM message_attachments
WHERE meeting_note_id = %(id)s
  AND (file_type = 'audio' OR content_type LIKE 'audio/%%')
ORDER BY chatwoot_attachment_id;

-- name: mark_done
UPDATE meeting_notes
SET transcript = %(transcript)s, transcription_status = 'done', error_details = NULL, updated_at = now()
WHERE id = %(id)s AND transcription_status = 'pending';

-- name: mark_failed
UPDATE meeting_notes
SET transcription_status = 'failed', error_details = %(error_details)s, updated_at = now()
WHERE id = %(id)s AND transcription_status = 'pending';

-- name: mark_skipped
-- With the reason when there is one (budget spent, English-only model); none: no reason.
UPDATE meeting_notes
SET transcription_status = 'skipped', error_details = coalesce(%(error_details)s, error_details),
    updated_at = now()
WHERE id = %(id)s AND transcription_status = 'pending';

-- name: record
-- What one transcription was and cost. A done row is never replaced.
INSERT INTO transcriptions (meeting_note_id, chatwoot_account_id, status, provider, model, language,
                            audio_seconds, provider_seconds, pieces, provider_calls, cost_per_minute,
                            estimated_cost, gcs_storage_path, error_details, skip_reason, avg_logprob,
                            no_speech_prob, decode_temperature, low_confidence)
VALUES (%(id)s, %(account_id)s, %(status)s, %(provider)s, %(model)s, %(language)s, %(audio_seconds)s,
        %(provider_seconds)s, %(pieces)s, %(provider_calls)s, %(cost_per_minute)s,
        %(estimated_cost)s, %(gcs_storage_path)s, %(error_details)s, %(skip_reason)s,
        %(avg_logprob)s, %(no_speech_prob)s, %(decode_temperature)s, %(low_confidence)s)
ON CONFLICT (meeting_note_id) DO UPDATE
SET status = EXCLUDED.status, provider = EXCLUDED.provider, model = EXCLUDED.model,
    chatwoot_account_id = EXCLUDED.chatwoot_account_id, skip_reason = EXCLUDED.skip_reason,
    avg_logprob = EXCLUDED.avg_logprob, no_speech_prob = EXCLUDED.no_speech_prob,
    decode_temperature = EXCLUDED.decode_temperature, low_confidence = EXCLUDED.low_confidence,
    language = EXCLUDED.language, audio_seconds = EXCLUDED.audio_seconds,
    provider_seconds = EXCLUDED.provider_seconds, pieces = EXCLUDED.pieces,
    provider_calls = transcriptions.provider_calls + EXCLUDED.provider_calls,
    cost_per_minute = EXCLUDED.cost_per_minute, estimated_cost = EXCLUDED.estimated_cost,
    gcs_storage_path = coalesce(EXCLUDED.gcs_storage_path, transcriptions.gcs_storage_path),
    error_details = EXCLUDED.error_details, updated_at = now()
WHERE transcriptions.status <> 'done';

-- name: get_record
SELECT meeting_note_id, status, provider, model, language, audio_seconds, provider_seconds, pieces,
       provider_calls, cost_per_minute, estimated_cost, gcs_storage_path, error_details, skip_reason,
       avg_logprob, no_speech_prob, decode_temperature, low_confidence, created_at
FROM transcriptions
WHERE meeting_note_id = %(id)s;

-- name: set_object
UPDATE transcriptions SET gcs_storage_path = %(path)s, updated_at = now()
WHERE meeting_note_id = %(id)s;

-- name: account_audio_this_month
-- Seconds of audio the providers transcribed for one account since the month began (UTC): what
-- its monthly budget is spent on (Chatwoot's own transcripts cost nothing and do not count).
SELECT coalesce(sum(audio_seconds), 0) AS audio_seconds
FROM transcriptions
WHERE chatwoot_account_id = %(account_id)s
  AND created_at >= date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
  AND status = 'done'
  AND provider <> 'chatwoot';
