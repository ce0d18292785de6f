"""Whisper on this machine's CPU with faster-whisper and a local model directory (offline).

The model is loaded on the first voice note and kept for the life of the process. The
transcription worker does not fork per job, so that happens once, inside the worker process
(never in a parent that forks afterwards: CTranslate2's threads do not survive a fork).
faster_whisper is imported here only, so installs that do not transcribe locally need not have it.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from app.transcription.base import TranscriptionError, TranscriptionResult

COMPUTE_TYPE = "int8"
"""CTranslate2 weights type on the CPU: int8 is the fastest with a negligible loss for Whisper."""

MODEL_CACHE_SIZE = 2
"""Models (directories) a process keeps loaded; accounts with models of their own share these,
the least recently used being unloaded (a large model takes gigabytes of memory)."""

_models: OrderedDict[str, Any] = OrderedDict()
_lock = threading.Lock()


def load_model(model_dir: str) -> Any:
    """The WhisperModel of `model_dir`, loaded once per process (MODEL_CACHE_SIZE kept)."""
    with _lock:
        model = _models.get(model_dir)
        if model is not None:
            _models.move_to_end(model_dir)
        else:
            # A local directory needs no model hub; make sure nothing tries to reach one.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            try:
                from faster_whisper import WhisperModel  # noqa: PLC0415 (optional, heavy)
            except ImportError:
                raise TranscriptionError(
                    "TRANSCRIPTION_PROVIDER=local needs faster-whisper: pip install faster-whisper"
                ) from None
            try:
                model = WhisperModel(model_dir, device="cpu", compute_type=COMPUTE_TYPE)
            except (RuntimeError, OSError, ValueError) as exc:
                raise TranscriptionError(
                    f"could not load the local Whisper model in LOCAL_WHISPER_MODEL: {type(exc).__name__}"
                ) from None
            _models[model_dir] = model
            while len(_models) > MODEL_CACHE_SIZE:
                _models.popitem(last=False)
        return model


def model_label(model_dir: str) -> str:
    """A short name for the model: the last two parts of its directory."""
    parts = Path(model_dir).resolve().parts
    return "/".join(parts[-2:]) if len(parts) >= 2 else model_dir


class LocalProvider:
    name = "local"
    max_upload_bytes: int | None = None
    accepted_suffixes: frozenset[str] | None = None

    def __init__(self, model_dir: str):
        self.model_dir = model_dir
        self.model = model_label(model_dir)

    def english_only(self) -> bool:
        """What the model itself says (faster-whisper's `is_multilingual`): tiny.en, base.en...
        understand English only and ignore a hint of another language."""
        return not bool(load_model(self.model_dir).model.is_multilingual)

    def transcribe(self, audio_path: Path, *, language: str | None) -> TranscriptionResult:
        started = time.perf_counter()
        model = load_model(self.model_dir)
        try:
            found, info = model.transcribe(str(audio_path), language=language or None)
            # Segments are produced lazily: the decoding happens while they are read.
            segments = list(found)
            text = " ".join(segment.text.strip() for segment in segments).strip()
        except (RuntimeError, ValueError, OSError) as exc:
            raise TranscriptionError(
                f"the local model could not transcribe the audio: {_reason(exc, audio_path)}"
            ) from None
        except Exception as exc:
            # PyAV's decoding errors (av.error.*) for audio it cannot read.
            if type(exc).__module__.startswith("av"):
                raise TranscriptionError(f"could not decode the audio: {_reason(exc, audio_path)}") from None
            raise
        return TranscriptionResult(
            text=text,
            language=getattr(info, "language", None) or language,
            audio_seconds=float(getattr(info, "duration", 0.0)) or None,
            provider=self.name,
            model=self.model,
            provider_seconds=time.perf_counter() - started,
            **confidence(segments),
        )


def confidence(segments: list[Any]) -> dict[str, float | None]:
    """How sure the model was, from its weakest part: the lowest avg_logprob, the highest
    no_speech_prob and the highest fallback temperature of its segments (a note half in a
    language the model does not know scores well on the half it knows)."""
    if not segments:
        return {"avg_logprob": None, "no_speech_prob": None, "temperature": None}
    return {
        "avg_logprob": round(min(float(s.avg_logprob) for s in segments), 4),
        "no_speech_prob": round(max(float(s.no_speech_prob) for s in segments), 4),
        "temperature": max(float(s.temperature or 0.0) for s in segments),
    }


def _reason(exc: BaseException, audio_path: Path) -> str:
    """A short reason, naming the file but not our temporary folder."""
    text = " ".join(str(exc).split()).replace(str(audio_path), audio_path.name)
    return (text or type(exc).__name__)[:200]
