-- Webhook deliveries of the last 24 hours by answer and signature outcome (the delivery audit
-- trail; `flask deliveries show <message id>` follows one message).
SELECT outcome,
       http_status,
       signature,
       COUNT(*) AS deliveries,
       ROUND(AVG(duration_ms)::numeric, 2) AS avg_ms,
       MAX(received_at) AS last_at
FROM webhook_deliveries
WHERE received_at >= NOW() - INTERVAL '24 hours'
GROUP BY outcome, http_status, signature
ORDER BY deliveries DESC;
