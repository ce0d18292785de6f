-- Chatwoot accounts whose read token Chatwoot refuses on list endpoints (an agent bot's token): their backfill is off until a user's access token is set (CHATWOOT_USER_ACCESS_TOKEN, or `flask accounts set <id> --user-token`).
SELECT chatwoot_account_id AS account,
       token_source,
       detail,
       changed_at AS refused_since,
       checked_at AS last_checked
FROM chatwoot_read_access
WHERE NOT can_read
ORDER BY chatwoot_account_id;
