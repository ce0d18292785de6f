-- Messages sent to users through Chatwoot by day and kind (last 14 days): sent, failed (of which refused by the channel after Chatwoot took them, e.g. WhatsApp 131047), not sent, no template (window closed, none configured), waiting.
SELECT
    date_trunc('day', created_at)::date AS day,
    kind,
    count(*) AS recorded,
    count(*) FILTER (WHERE status = 'sent') AS sent,
    count(*) FILTER (WHERE status = 'failed') AS failed,
    count(*) FILTER (WHERE refused_at IS NOT NULL) AS refused,
    count(*) FILTER (WHERE status = 'not_sent') AS not_sent,
    count(*) FILTER (WHERE status = 'no_template') AS no_template,
    count(*) FILTER (WHERE status IN ('pending', 'sending')) AS waiting,
    max(error_details) FILTER (WHERE status IN ('failed', 'not_sent', 'no_template')) AS an_error
FROM outbox
WHERE created_at >= date_trunc('day', now()) - interval '13 days'
GROUP BY 1, 2
ORDER BY 1 DESC, 2;
