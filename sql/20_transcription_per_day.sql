-- Voice notes transcribed per day over the last 30 days (UTC), per provider and in total:
-- how many, minutes of audio, the providers' own time, and the estimated cost. The cost of
-- each transcription is priced when it is made (TRANSCRIPTION_COST_PER_MINUTE, openai provider
-- only; local and Chatwoot transcripts cost nothing per minute), so this file needs no setting.
--   psql "$DATABASE_URL" -f sql/20_transcription_per_day.sql
SELECT (created_at AT TIME ZONE 'UTC')::date AS day,
       coalesce(provider, 'all') AS provider,
       count(*) FILTER (WHERE status = 'done') AS transcribed,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       count(*) FILTER (WHERE status = 'skipped') AS skipped,
       round(coalesce(sum(audio_seconds) FILTER (WHERE status = 'done'), 0) / 60.0, 2) AS audio_minutes,
       round(coalesce(sum(provider_seconds), 0) / 60.0, 2) AS provider_minutes,
       round(sum(provider_seconds) FILTER (WHERE status = 'done')
             / nullif(sum(audio_seconds) FILTER (WHERE status = 'done'), 0), 3) AS real_time_factor,
       round(coalesce(sum(estimated_cost), 0), 4) AS estimated_cost_usd
  FROM transcriptions
 WHERE created_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' - interval '29 days'
 GROUP BY GROUPING SETS (((created_at AT TIME ZONE 'UTC')::date, provider),
                         ((created_at AT TIME ZONE 'UTC')::date))
 ORDER BY day DESC, GROUPING(provider) DESC, provider;
