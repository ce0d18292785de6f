"""Administration: the admin API and page, the CLI, monitoring and requeueing."""

from __future__ import annotations

from flask import Flask

from app.admin import api, auth, page
from app.archive import api as archive_api


def init_app(app: Flask) -> None:
    """Register the admin API and the admin page, behind the admin token and its rate limits."""
    auth.init_limits(app, (api.bp, archive_api.bp, page.bp))
    app.register_blueprint(api.bp)
    app.register_blueprint(archive_api.bp)
    page.init_app(app)
