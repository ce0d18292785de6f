"""RQ entry point: jobs queued under `workers.transcribe.<name>` run the transcription stage"s code in `app/transcription/jobs.py`."""

from app.transcription.jobs import transcribe_message

__all__ = ["transcribe_message"]
