"""Webhook deliveries, the spool and the Chatwoot backfill, against real PostgreSQL and Redis."""
