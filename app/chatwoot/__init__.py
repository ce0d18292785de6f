"""Chatwoot: the typed view of its payloads, webhook signatures, accounts, the API client and the outbox."""
