-- Content orders by day (last 30 days): how many left clarification and how many became ready.
SELECT
    date_trunc('day', created_at)::date AS day,
    count(*) AS orders,
    count(*) FILTER (WHERE status = 'clarifying') AS clarifying,
    count(*) FILTER (WHERE status IN ('queued', 'generating', 'ready', 'failed')) AS clarified,
    count(*) FILTER (WHERE status IN ('queued', 'generating')) AS in_generation,
    count(*) FILTER (WHERE status = 'ready') AS ready,
    count(*) FILTER (WHERE status = 'failed') AS failed,
    count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
    round(100.0 * count(*) FILTER (WHERE status = 'ready') / count(*), 1) AS ready_pct,
    round((percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM ready_at - created_at))
        FILTER (WHERE status = 'ready' AND ready_at IS NOT NULL) / 60)::numeric, 1) AS median_minutes_to_ready
FROM orders
WHERE created_at >= now() - interval '30 days'
GROUP BY 1
ORDER BY 1 DESC;
