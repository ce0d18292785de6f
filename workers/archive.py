"""RQ entry point: jobs queued under `workers.archive.<name>` run the archive stage"s code in `app/archive/jobs.py`."""

from app.archive.jobs import archive_message, archive_update

__all__ = ["archive_message", "archive_update"]
