-- Voice notes transcribed per Chatwoot account: this calendar month (UTC) against the account's
-- own monthly budget (own_budget_minutes; empty: TRANSCRIPTION_MONTHLY_MINUTES applies, 0: no
-- limit), notes kept untranscribed because the budget was spent or the model understands English
-- only, transcripts the model was unsure of, and the last 30 days' minutes and estimated cost.
--   psql "$DATABASE_URL" -f sql/21_transcription_per_account.sql
WITH bounds AS (
    SELECT date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS month_start,
           date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' - interval '29 days' AS days_start
)
SELECT t.chatwoot_account_id AS account,
       round(coalesce(sum(t.audio_seconds) FILTER (WHERE t.status = 'done' AND t.provider <> 'chatwoot'
                                                     AND t.created_at >= b.month_start), 0) / 60.0, 2)
           AS month_audio_minutes,
       min(s.transcription_budget_minutes) AS own_budget_minutes,
       count(*) FILTER (WHERE t.skip_reason = 'budget' AND t.created_at >= b.month_start)
           AS month_skipped_over_budget,
       count(*) FILTER (WHERE t.skip_reason = 'english_only' AND t.created_at >= b.month_start)
           AS month_skipped_english_only,
       count(*) FILTER (WHERE t.low_confidence AND t.created_at >= b.month_start) AS month_unsure,
       count(*) FILTER (WHERE t.status = 'done' AND t.created_at >= b.days_start) AS transcribed_30d,
       round(coalesce(sum(t.audio_seconds) FILTER (WHERE t.status = 'done' AND t.created_at >= b.days_start), 0)
             / 60.0, 2) AS audio_minutes_30d,
       round(coalesce(sum(t.estimated_cost) FILTER (WHERE t.created_at >= b.days_start), 0), 4)
           AS estimated_cost_usd_30d
  FROM transcriptions t
 CROSS JOIN bounds b
  LEFT JOIN account_ai_settings s ON s.chatwoot_account_id = t.chatwoot_account_id
 WHERE t.created_at >= least(b.month_start, b.days_start)
 GROUP BY t.chatwoot_account_id
 ORDER BY month_audio_minutes DESC, account;
