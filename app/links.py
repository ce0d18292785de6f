"""Jobs queued before moves were recorded name `app.links.rehome_job(account_id, user_id)`:
they still run, as a move request of today."""

from app import context
from app.users.rehome import schedule


def rehome_job(account_id: int, user_id: str) -> bool:
    """Turn an old queued move into a durable move request (run by workers.rehome)."""
    if context.db().fetch_one("users.user_get", {"user_id": user_id}) is None:
        return False  # erased meanwhile
    return schedule(int(account_id), str(user_id))


__all__ = ["rehome_job"]
