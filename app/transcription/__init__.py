"""Speech to text behind one small interface, chosen by TRANSCRIPTION_PROVIDER.

`get_provider(settings)` returns the provider in force (or None for `none`); each provider's
`transcribe(audio_path, *, language)` turns one audio file into a `TranscriptionResult`, or
raises `TranscriptionError` (final: retrying cannot help) or `TransientTranscriptionError`
(rate limited, provider unavailable, timeout: worth another try after a wait).

Each account may have a provider of its own (app/chatwoot/account_ai.py): a worker process keeps
one provider (and its HTTP client, or its loaded model) per distinct configuration, the
`PROVIDER_CACHE_SIZE` most recently used, so a thousand accounts do not mean a thousand clients.

Provider modules are imported only when chosen: a web process or an install without
faster-whisper never imports it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from app.config import Settings

CHATWOOT = "chatwoot"
"""Provider name recorded when Chatwoot's own transcript is used."""
PROVIDER_CACHE_SIZE = 32
"""Providers (one per distinct configuration: server, key, model) a process keeps; the least
recently used is dropped beyond that."""


@dataclass(frozen=True)
class TranscriptionResult:
    text: str
    language: str | None
    """ISO 639-1 code: detected by the provider, or the hint it was given."""
    audio_seconds: float | None
    provider: str
    model: str | None
    provider_seconds: float
    """Time the provider itself took (model load included the first time, for `local`)."""
    avg_logprob: float | None = None
    """The model's confidence in its words: the mean log probability of the tokens of its weakest
    segment (local provider; Whisper's own threshold for a doubtful segment is -1)."""
    no_speech_prob: float | None = None
    """The model's belief that the audio holds no speech, in the segment where it is highest
    (local provider; doubtful above 0.6)."""
    temperature: float | None = None
    """The highest sampling temperature the decoder fell back to: above 0, its first, greedy
    reading failed Whisper's own checks and the words kept are a random draw (local provider)."""


class TranscriptionError(Exception):
    """The provider refused or could not read the audio; another try would fail the same way."""


class TransientTranscriptionError(TranscriptionError):
    """Rate limited, unavailable or timed out: worth another try after a wait."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after
        """Seconds the provider asked us to wait (Retry-After), when it said."""


class Provider(Protocol):
    name: str
    model: str
    max_upload_bytes: int | None
    """Largest file the provider takes; longer audio is split first. None: no limit."""
    accepted_suffixes: frozenset[str] | None
    """File types the provider takes as they are; others are converted to Ogg/Opus. None: any."""

    def transcribe(self, audio_path: Path, *, language: str | None) -> TranscriptionResult: ...

    def english_only(self) -> bool:
        """Whether the model understands English only (it ignores any other language hint)."""
        ...


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
        from app.transcription.openai_provider import OpenAIProvider

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
    from app.transcription.local import LocalProvider

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
    import importlib.util

    name = settings.effective_transcription_provider
    if name == "local" and importlib.util.find_spec("faster_whisper") is None:
        return "TRANSCRIPTION_PROVIDER=local needs faster-whisper installed (pip install faster-whisper)"
    return None
