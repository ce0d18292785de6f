"""Audio files for transcription: duration, the file name a provider needs, conversion and splitting.

Durations come from the file's own headers (mutagen: well under a millisecond for Ogg/Opus),
falling back to ffprobe for formats it does not know. Conversion and splitting use ffmpeg.
"""

from __future__ import annotations

import logging
import math
import shutil
import subprocess
from pathlib import Path

import mutagen

log = logging.getLogger(__name__)

SPLIT_BITRATE = 32_000
"""Bits per second of the Ogg/Opus pieces made when audio is over a provider's limit (mono speech)."""
SPLIT_HEADROOM = 0.85
"""Share of the provider's limit a piece is sized for (container overhead, variable bitrate)."""
MAX_PIECE_SECONDS = 1200
"""Longest piece sent in one request: some models refuse audio longer than about 23 minutes."""
MIN_PIECE_SECONDS = 5
"""Shorter pieces cut too many words: below this, the audio is refused instead."""
FFMPEG_TIMEOUT = 600
"""Seconds ffmpeg may take to convert or split one file."""

_CONTENT_TYPES = {
    ".ogg": "audio/ogg",
    ".oga": "audio/ogg",
    ".opus": "audio/ogg",
    ".mp3": "audio/mpeg",
    ".mpeg": "audio/mpeg",
    ".mpga": "audio/mpeg",
    ".m4a": "audio/mp4",
    ".mp4": "audio/mp4",
    ".aac": "audio/aac",
    ".wav": "audio/wav",
    ".webm": "audio/webm",
    ".flac": "audio/flac",
    ".amr": "audio/amr",
}


class AudioError(Exception):
    """The audio cannot be made fit for the provider; the message says why, for error_details."""


def is_ogg(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(4) == b"OggS"


def upload_name(path: Path) -> str:
    """The file name to upload under: `.ogg` for any Ogg file (providers refuse `.opus`/`.oga`
    for Ogg/Opus voice notes and recognise the format by this name)."""
    if is_ogg(path):
        return f"{path.stem}.ogg"
    return path.name


def content_type(path: Path) -> str:
    if is_ogg(path):
        return "audio/ogg"
    return _CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")


def duration(path: Path) -> float | None:
    """Seconds of audio in the file, or None when neither its headers nor ffprobe tell."""
    try:
        info = mutagen.File(str(path))  # type: ignore[attr-defined]
        length = getattr(getattr(info, "info", None), "length", None)
        if isinstance(length, int | float) and length > 0 and math.isfinite(length):
            return float(length)
    except Exception as exc:  # a header it cannot parse: ask ffprobe instead
        log.debug("audio header not readable", extra={"error_type": type(exc).__name__})
    return _ffprobe_duration(path)


def _ffprobe_duration(path: Path) -> float | None:
    ffprobe = shutil.which("ffprobe")
    if ffprobe is None:
        return None
    try:
        out = subprocess.run(
            [ffprobe, "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        value = float(out.stdout.strip())
    except (subprocess.TimeoutExpired, ValueError, OSError):
        return None
    return value if value > 0 and math.isfinite(value) else None


def prepare(
    path: Path,
    workdir: Path,
    *,
    max_bytes: int | None,
    accepted_suffixes: frozenset[str] | None,
) -> list[Path]:
    """The file(s) to send, in order: the file itself when the provider takes it as it is;
    converted to Ogg/Opus when its type is not accepted; split into ordered Ogg/Opus pieces
    when it is over `max_bytes`. Raises AudioError when that cannot be done."""
    name_ok = accepted_suffixes is None or Path(upload_name(path)).suffix.lower() in accepted_suffixes
    size = path.stat().st_size
    if name_ok and (max_bytes is None or size <= max_bytes):
        return [path]
    if not name_ok:
        converted = convert_to_ogg(path, workdir / f"{path.stem}-converted.ogg")
        if max_bytes is None or converted.stat().st_size <= max_bytes:
            return [converted]
    assert max_bytes is not None
    return split(path, workdir, max_bytes)


def _ffmpeg(purpose: str) -> str:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise AudioError(f"ffmpeg is not installed, so the audio could not be {purpose}")
    return ffmpeg


def _run_ffmpeg(args: list[str], purpose: str, source: Path) -> None:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=FFMPEG_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise AudioError(
            f"ffmpeg took over {FFMPEG_TIMEOUT} s, so the audio could not be {purpose}"
        ) from None
    if done.returncode != 0:
        # ffmpeg's last line says why; without our temporary folder in it.
        last = (done.stderr.strip().splitlines() or ["no details"])[-1].replace(f"{source.parent}/", "")
        raise AudioError(f"ffmpeg could not read the audio, so it could not be {purpose}: {last[:160]}")


_SPEECH_OPUS = ["-vn", "-ac", "1", "-c:a", "libopus", "-b:a", str(SPLIT_BITRATE), "-application", "voip"]


def convert_to_ogg(path: Path, target: Path) -> Path:
    ffmpeg = _ffmpeg("converted")
    _run_ffmpeg(
        [
            ffmpeg,
            "-nostdin",
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-i",
            str(path),
            *_SPEECH_OPUS,
            str(target),
        ],
        "converted",
        path,
    )
    return target


def piece_seconds(max_bytes: int) -> int:
    """Seconds of mono Ogg/Opus at SPLIT_BITRATE that fit within `max_bytes` with headroom."""
    return min(MAX_PIECE_SECONDS, int(max_bytes * SPLIT_HEADROOM / (SPLIT_BITRATE / 8)))


def split(path: Path, workdir: Path, max_bytes: int) -> list[Path]:
    """Ordered Ogg/Opus pieces of `path`, each within `max_bytes`."""
    seconds = piece_seconds(max_bytes)
    if seconds < MIN_PIECE_SECONDS:
        raise AudioError(
            f"the audio is over the provider's limit of {max_bytes} bytes, and pieces that small "
            f"({seconds} s) would cut it into fragments; raise TRANSCRIPTION_MAX_UPLOAD_BYTES"
        )
    ffmpeg = _ffmpeg("split for the provider's limit")
    pieces_dir = workdir / f"{path.stem}-pieces"
    pieces_dir.mkdir(parents=True, exist_ok=True)
    _run_ffmpeg(
        [
            ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i", str(path), *_SPEECH_OPUS,
            "-f", "segment", "-segment_time", str(seconds), "-reset_timestamps", "1",
            str(pieces_dir / "piece-%05d.ogg"),
        ],
        "split for the provider's limit",
        path,
    )  # fmt: skip
    pieces = sorted(pieces_dir.glob("piece-*.ogg"))
    if not pieces:
        raise AudioError("ffmpeg produced no audio when splitting the file (is there any sound in it?)")
    too_big = [p for p in pieces if p.stat().st_size > max_bytes]
    if too_big:
        raise AudioError(
            f"a piece of the split audio is still over the provider's limit of {max_bytes} bytes "
            f"({too_big[0].stat().st_size} bytes)"
        )
    log.info("audio split", extra={"pieces": len(pieces), "piece_seconds": seconds})
    return pieces
