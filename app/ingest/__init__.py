"""Ingestion: a webhook delivery (or a spooled or backfilled message) becomes a `meeting_notes` row."""
