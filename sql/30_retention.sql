-- Retention per Chatwoot account (`flask retention set`): each policy and its latest run, with
-- what legal holds kept. Accounts not listed keep their messages for ever.
SELECT p.chatwoot_account_id,
       p.days,
       p.set_by,
       p.set_at,
       r.started_at AS last_run,
       r.status,
       r.cutoff,
       r.messages_deleted,
       r.objects_deleted,
       r.kept_on_hold
FROM retention_policies p
LEFT JOIN LATERAL (
    SELECT started_at, status, cutoff, messages_deleted, objects_deleted, kept_on_hold
    FROM retention_runs
    WHERE chatwoot_account_id = p.chatwoot_account_id
    ORDER BY id DESC
    LIMIT 1
) r ON true
ORDER BY p.chatwoot_account_id;
