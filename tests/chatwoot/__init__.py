"""The Chatwoot API client, the outbox and per-account settings."""
