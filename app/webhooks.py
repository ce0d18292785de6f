"""`POST /webhooks/chatwoot`: verify, parse, record durably, enqueue, answer."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("webhooks", __name__)
