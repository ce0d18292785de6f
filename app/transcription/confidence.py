"""How sure the model was of a transcript, and whether an order may be read from it.

The local provider reports, per segment, the mean log probability of its tokens (`avg_logprob`)
and the probability that the audio holds no speech (`no_speech_prob`); the job keeps those of
the weakest segment (the lowest avg_logprob, the highest no_speech_prob) in `transcriptions`.
Beyond Whisper's own thresholds the transcript is doubtful: an English-only model fed Portuguese
or Spanish fails them at temperature 0, falls back to sampling up to temperature 1 and keeps
English-sounding nonsense scoring -1.1 to -2.9 (a different draw each run; or "Thank you for
watching" over audio it takes for silence, no_speech_prob 0.9), where clear English speech
is read greedily (temperature 0) and scores -0.3 to -0.6 and 0.05 to 0.2.
"""

from __future__ import annotations

from typing import Any

from app import context

LOGPROB_THRESHOLD = -1.0
"""Mean token log probability under which a transcript is doubtful (Whisper's `logprob_threshold`)."""
NO_SPEECH_THRESHOLD = 0.6
"""Probability of no speech above which a transcript is doubtful (Whisper's `no_speech_threshold`)."""


def low(avg_logprob: float | None, no_speech_prob: float | None, temperature: float | None = None) -> bool:
    """Whether the model was unsure of its words (False when it did not say): beyond Whisper's
    thresholds, or read at all only by falling back to sampling (its greedy reading failed them,
    and what it kept is a random draw that may score better by chance)."""
    if avg_logprob is not None and avg_logprob < LOGPROB_THRESHOLD:
        return True
    if temperature is not None and temperature > 0:
        return True
    return no_speech_prob is not None and no_speech_prob > NO_SPEECH_THRESHOLD


def doubtful(note: dict[str, Any]) -> bool:
    """A voice note whose transcript the model was unsure of: what it seems to ask for must be
    asked back before anything is made of it."""
    if note.get("transcription_status") != "done" or not (note.get("transcript") or "").strip():
        return False
    record = context.db().fetch_one("transcription.get_record", {"id": note["id"]})
    return bool(record and record.get("low_confidence"))
