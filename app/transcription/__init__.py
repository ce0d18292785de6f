"""Speech to text behind one small interface, chosen by TRANSCRIPTION_PROVIDER.

`get_provider(settings)` returns the provider in force (or None for `none`); each provider's
`transcribe(audio_path, *, language)` turns one audio file into a `TranscriptionResult`, or
raises `TranscriptionError` (final: retrying cannot help) or `TransientTranscriptionError`
(rate limited, provider unavailable, timeout: worth another try after a wait).

Each account may have a provider of its own (app/chatwoot/account_ai.py): a worker process keeps
one provider (and its HTTP client, or its loaded model) per distinct configuration, the
`PROVIDER_CACHE_SIZE` most recently used, so a thousand accounts do not mean a thousand clients.

faster-whisper and the openai client are imported only when their provider is used: a web
process or an install without faster-whisper never imports it.
"""

from __future__ import annotations

import importlib.util
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING

from app.transcription.base import CHATWOOT as CHATWOOT
from app.transcription.base import Provider as Provider
from app.transcription.base import TranscriptionError as TranscriptionError
from app.transcription.base import TranscriptionResult as TranscriptionResult
from app.transcription.base import TransientTranscriptionError as TransientTranscriptionError
from app.transcription.local import LocalProvider
from app.transcription.openai_provider import OpenAIProvider

if TYPE_CHECKING:
    from app.config import Settings

PROVIDER_CACHE_SIZE = 32
"""Providers (one per distinct configuration: server, key, model) a process keeps; the least
recently used is dropped beyond that."""


_providers: OrderedDict[tuple[object, ...], Provider] = OrderedDict()
_lock = threading.Lock()


def get_provider(settings: Settings) -> Provider | None:
    """The provider in force, built once per process and configuration (the most recently used
    PROVIDER_CACHE_SIZE kept); None for `none`. Raises TranscriptionError when it cannot be
    built (the openai provider without a key)."""
    name = settings.effective_transcription_provider
    if name == "none":
        return None
    if name == "openai":
        key: tuple[object, ...] = (
            name,
            settings.openai_api_key,
            settings.openai_base_url,
            settings.transcription_model,
            settings.transcription_timeout,
            settings.transcription_max_upload_bytes,
        )
    elif name == "local":
        key = (name, settings.local_whisper_model)
    else:
        raise ValueError(f"unknown transcription provider {name!r}")
    with _lock:
        found = _providers.get(key)
        if found is None:
            found = _build(name, settings)
            _providers[key] = found
            while len(_providers) > PROVIDER_CACHE_SIZE:
                _providers.popitem(last=False)
        else:
            _providers.move_to_end(key)
        return found


def _build(name: str, settings: Settings) -> Provider:
    if name == "openai":
        if not settings.openai_api_key:
            where = settings.openai_base_url or "api.openai.com"
            raise TranscriptionError(f"the openai provider has no API key for {where}")

        return OpenAIProvider(
            api_key=settings.openai_api_key,
            base_url=settings.openai_base_url or None,
            model=settings.transcription_model,
            timeout=settings.transcription_timeout,
            max_upload_bytes=settings.transcription_max_upload_bytes,
        )

    return LocalProvider(settings.local_whisper_model)


def describe(settings: Settings) -> dict[str, str]:
    """What the worker logs at start: the provider and its model, without building either."""
    name = settings.effective_transcription_provider
    if name == "openai":
        where = settings.openai_base_url or "api.openai.com"
        return {
            "transcription_provider": name,
            "transcription_model": settings.transcription_model,
            "transcription_server": where,
        }
    if name == "local":
        return {"transcription_provider": name, "transcription_model": settings.local_whisper_model}
    return {"transcription_provider": name}


def missing_requirement(settings: Settings) -> str | None:
    """Why the provider in force cannot run in this install, checked without importing it
    (the transcription worker checks at start; the model itself loads in the worker process)."""

    name = settings.effective_transcription_provider
    if name == "local" and importlib.util.find_spec("faster_whisper") is None:
        return "TRANSCRIPTION_PROVIDER=local needs faster-whisper installed (pip install faster-whisper)"
    return None
