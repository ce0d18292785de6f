"""The Flask application factory."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from app import context
from app.config import Settings


def create_app(settings: Settings | None = None, test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app; settings default to the environment (and `.env`)."""
    # Imported here, not at the top: the workers import `app.*` modules and must not load the
    # web app (Flask blueprints, the admin page, the limiter) with them.
    from app import cli as app_cli
    from app.admin import cli as admin_cli
    from app.admin import init_app as init_admin
    from app.admin import requeue
    from app.admin.metrics_http import init_app as init_metrics
    from app.archive import cli as archive_cli
    from app.chatwoot import cli as chatwoot_cli
    from app.errors import register_error_handlers
    from app.health import bp as health_bp
    from app.ingest import backfill, spool
    from app.ingest.webhook import WebhookRoute
    from app.ingest.webhook import bp as webhooks_bp
    from app.logs import configure_logging, settings_secrets
    from app.orders.api import bp as orders_api_bp
    from app.records import cli as records_cli
    from app.users import cli as users_cli

    if settings is not None:
        context.use_settings(settings)
    current = context.settings()
    configure_logging(current.log_level, settings_secrets(current))

    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=current.secret_key,
        MAX_CONTENT_LENGTH=None,  # the webhook enforces its own limit with a JSON 413
        JSON_SORT_KEYS=False,
        SETTINGS=current,
    )
    if test_config:
        app.config.update(test_config)

    register_error_handlers(app)
    app.register_blueprint(health_bp)
    app.register_blueprint(webhooks_bp)
    app.register_blueprint(orders_api_bp)
    init_metrics(app)
    init_admin(app)
    for area in (app_cli, users_cli, chatwoot_cli, admin_cli, archive_cli, requeue, spool, backfill):
        area.register(app)
    records_cli.register(app)
    app.wsgi_app = WebhookRoute(app.wsgi_app)  # type: ignore[method-assign]
    if current.trusted_proxies:  # the scheme comes from gunicorn (forwarded_allow_ips)
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=current.trusted_proxies)  # type: ignore[method-assign]
    return app
