"""Jobs queued before the stage packages existed name `app.links.rehome_job`: they still run."""

from app.users.link_codes import rehome_job

__all__ = ["rehome_job"]
