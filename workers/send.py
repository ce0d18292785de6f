"""RQ entry point: jobs queued under `workers.send.<name>` run the chatwoot stage"s code in `app/chatwoot/send.py`."""

from app.chatwoot.send import send_outbox

__all__ = ["send_outbox"]
