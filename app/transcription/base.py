"""What every speech-to-text provider shares: its result, its errors and its interface."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

CHATWOOT = "chatwoot"
"""Provider name recorded when Chatwoot's own transcript is used."""


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
