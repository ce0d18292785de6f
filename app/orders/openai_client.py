"""The openai client for chat calls (classification, drafting), one per process and purpose.

`OPENAI_BASE_URL` points it at any OpenAI-compatible server. A client keeps its HTTP connections,
so it is built once per (key, server, timeout, retries) rather than on every call.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from app.config import Settings


def chat_client(settings: Settings, *, timeout: float, max_retries: int) -> Any:
    if not settings.openai_api_key:
        raise ValueError("OPENAI_API_KEY is not set")
    return _client(settings.openai_api_key, settings.openai_base_url or None, timeout, max_retries)


@lru_cache(maxsize=8)
def _client(api_key: str, base_url: str | None, timeout: float, max_retries: int) -> Any:
    from openai import OpenAI  # noqa: PLC0415 (only processes that call a model load the SDK)

    return OpenAI(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=max_retries)
