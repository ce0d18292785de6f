"""Whisper through the OpenAI API, or any server that speaks it (Groq, speaches, LocalAI).

The client's own retries are off (`max_retries=0`): the transcription job owns the retry
policy (tenacity, backoff honouring Retry-After), so every provider call is counted and timed,
and a rate-limited note never waits in two nested retry loops.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from app.transcription import audio
from app.transcription.base import TranscriptionError, TranscriptionResult, TransientTranscriptionError

OPENAI_MAX_UPLOAD_BYTES = 25_000_000
"""Bytes: the endpoint's limit per file (25 MB)."""

ACCEPTED_SUFFIXES = frozenset(
    {".flac", ".m4a", ".mp3", ".mp4", ".mpeg", ".mpga", ".oga", ".ogg", ".wav", ".webm"}
)
"""File types the endpoint takes, recognised by the upload's file name."""

_TRANSIENT_STATUSES = frozenset({408, 409, 425, 429})


class OpenAIProvider:
    name = "openai"
    accepted_suffixes: frozenset[str] | None = ACCEPTED_SUFFIXES

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None,
        model: str,
        timeout: float,
        max_upload_bytes: int | None = OPENAI_MAX_UPLOAD_BYTES,
    ):
        from openai import OpenAI  # noqa: PLC0415 (loaded by processes that transcribe only)

        self.model = model
        self.max_upload_bytes = max_upload_bytes
        self.client = OpenAI(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=0)
        self._api_key = api_key

    def english_only(self) -> bool:
        """Models named `*.en` (faster-whisper's and distil-whisper's English-only models, served
        by speaches or LocalAI) understand English only; OpenAI's and Groq's are multilingual."""
        return self.model.lower().endswith(".en")

    def transcribe(self, audio_path: Path, *, language: str | None) -> TranscriptionResult:
        import openai  # noqa: PLC0415 (as above)

        options: dict[str, Any] = {"model": self.model, "response_format": "json"}
        if language:
            options["language"] = language
        started = time.perf_counter()
        try:
            with audio_path.open("rb") as fh:
                upload = (audio.upload_name(audio_path), fh, audio.content_type(audio_path))
                answer = self.client.audio.transcriptions.create(file=upload, **options)
        except openai.APITimeoutError:
            raise TransientTranscriptionError("the transcription server did not answer in time") from None
        except openai.APIConnectionError:
            raise TransientTranscriptionError("could not connect to the transcription server") from None
        except openai.APIStatusError as exc:
            raise _status_error(exc, self._api_key) from None
        except openai.APIResponseValidationError:
            raise TranscriptionError("the transcription server's answer could not be read") from None
        elapsed = time.perf_counter() - started
        text = getattr(answer, "text", None)
        if not isinstance(text, str):
            raise TranscriptionError("the transcription server's answer had no text")
        return TranscriptionResult(
            text=text.strip(),
            language=language,
            audio_seconds=audio.duration(audio_path),
            provider=self.name,
            model=self.model,
            provider_seconds=elapsed,
        )


def _status_error(exc: Any, api_key: str = "") -> TranscriptionError:
    status = int(exc.status_code)
    reason = _error_message(exc)
    if api_key and len(api_key) >= 4:
        reason = reason.replace(api_key, "***")  # a server that echoes the key it refused
    message = f"HTTP {status}: {reason}"
    if status in _TRANSIENT_STATUSES or status >= 500:
        return TransientTranscriptionError(message, retry_after=_retry_after(exc))
    if status in (401, 403):
        message += " (check the key and server: OPENAI_API_KEY and OPENAI_BASE_URL, or the account's own)"
    return TranscriptionError(message)


def _error_message(exc: Any) -> str:
    """The server's own short reason (`error.message`), without request details."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return " ".join(inner["message"].split())[:240]
        if isinstance(inner, str):
            return " ".join(inner.split())[:240]
    return {
        400: "bad request",
        401: "unauthorized",
        403: "forbidden",
        404: "not found",
        413: "file too large",
        429: "rate limited",
    }.get(int(exc.status_code), "error")


def _retry_after(exc: Any) -> float | None:
    headers = getattr(getattr(exc, "response", None), "headers", None)
    if headers is None:
        return None
    for header, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        raw = headers.get(header)
        if raw is None:
            continue
        try:
            value = float(raw) / divisor
        except ValueError:
            continue
        if value >= 0:
            return value
    return None
