-- Time from received to stored (archived in GCS) per UTC day, last 14 days: p50 and p95 in seconds,
-- read from the stored_latency_daily roll-up (within 5 % of the exact values).
WITH running AS (
    SELECT day, bucket,
           sum(messages) OVER (PARTITION BY day ORDER BY bucket) AS below,
           sum(messages) OVER (PARTITION BY day) AS total
    FROM stored_latency_daily
    WHERE day >= (now() AT TIME ZONE 'UTC')::date - 13
      AND messages > 0
)
SELECT
    day,
    max(total) AS stored,
    round((power(1.1, min(bucket) FILTER (WHERE below >= 0.5 * total) + 0.5) / 1000)::numeric, 2) AS p50_seconds,
    round((power(1.1, min(bucket) FILTER (WHERE below >= 0.95 * total) + 0.5) / 1000)::numeric, 2) AS p95_seconds,
    round((power(1.1, max(bucket) + 1) / 1000)::numeric, 2) AS slowest_under_seconds
FROM running
GROUP BY day
ORDER BY day DESC;
