"""Archiving messages and media into GCS (emulator) buckets."""
