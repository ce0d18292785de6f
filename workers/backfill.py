"""RQ entry point: jobs queued under `workers.backfill.<name>` run the ingest stage"s code in `app/ingest/backfill_job.py`."""

from app.ingest.backfill_job import backfill

__all__ = ["backfill"]
