-- Notices not sent because WhatsApp's 24-hour window was closed and no approved template is configured (last 30 days), by account: set WHATSAPP_READY_TEMPLATE_NAME or `flask accounts set <id> --ready-template`.
SELECT chatwoot_account_id AS account,
       kind,
       count(*) AS notices,
       min(updated_at) AS first_at,
       max(updated_at) AS last_at
FROM outbox
WHERE status = 'no_template'
  AND created_at >= now() - interval '30 days'
GROUP BY 1, 2
ORDER BY 1, 2;
