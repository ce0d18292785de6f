"""The transcription job: a voice note's archived audio (from GCS, never Chatwoot again) to text.

`transcribe_message(note_id)`:
1. takes the note's transcription lock (a PostgreSQL advisory lock: two runs of the job never
   transcribe the same note at once) and reloads the row; anything but `pending` is finished work;
2. uses Chatwoot's own transcript when one has arrived (`transcribed_text` in the message or an
   update of it: provider `chatwoot`, no Whisper call), else the provider in force for the
   note's account (its own settings, read once per job, else the environment's; `none`:
   `skipped`). A note is also `skipped`, with the reason, when the account's monthly budget of
   audio minutes is spent, or when the model understands English only and the note's language
   is known to be another; audio over the provider's limit is split into ordered pieces, or
   refused;
3. retries 429, 5xx and timeouts with backoff (TRANSCRIPTION_MAX_ATTEMPTS calls per piece, in
   this process: the transcription worker is the only consumer of the provider, so waiting
   here is the back-pressure a rate limit asks for); a 400 or unreadable audio is final;
4. writes `<message prefix>/transcript.json` (if_generation_match=0: never overwritten; one left
   by a run that stopped before its database write is the transcript, and the row takes its
   text), then the row (`done` + transcript, or `failed` + error_details, or `skipped`) and the
   `transcriptions` record in one transaction, forward only;
5. posts the transcript as a private note when TRANSCRIPT_PRIVATE_NOTE is on (through the
   outbox, once), and hands the note to classification.
A run on a finished note completes what a stopped run may have left (object, private note,
classification) and calls no provider.
"""

from __future__ import annotations

import json
import logging
import random
import tempfile
import time
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from google.api_core.exceptions import NotFound
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from app import context
from app.archive import storage
from app.archive.storage import CALL_TIMEOUT
from app.chatwoot import account_ai, outbox
from app.chatwoot.client import MAX_TEXT_CHARS
from app.db import DatabaseError, queries
from app.jobs import CLASSIFY_MESSAGE, QueueUnavailable, enqueue
from app.metrics import (
    ACCOUNT_AUDIO_SECONDS,
    ACCOUNT_PROVIDER_CALLS,
    JOBS,
    TRANSCRIPTION_AUDIO_SECONDS,
    TRANSCRIPTION_PROVIDER_SECONDS,
    account_label,
)
from app.transcription import (
    CHATWOOT,
    Provider,
    TranscriptionError,
    TranscriptionResult,
    TransientTranscriptionError,
    audio,
    confidence,
    get_provider,
)

log = logging.getLogger(__name__)

JOB_NAME = "transcribe"
MAX_RETRY_WAIT = 60.0
"""Seconds: the longest wait between two provider calls, whatever Retry-After says."""
PRIVATE_NOTE_TITLE = "Voice note transcript:"
"""First line of the private note for agents (longer transcripts are cut to Chatwoot's text limit)."""


@dataclass
class Outcome:
    """What the transcription of one note came to."""

    status: str  # done, failed or skipped
    provider: str
    model: str | None = None
    text: str | None = None
    language: str | None = None
    audio_seconds: float | None = None
    provider_seconds: float = 0.0
    pieces: int = 0
    provider_calls: int = 0
    error_details: str | None = None
    attachment_ids: list[int] = field(default_factory=list)
    skip_reason: str | None = None
    """Why a note was skipped: none (no provider), budget, english_only."""
    avg_logprob: float | None = None
    no_speech_prob: float | None = None
    temperature: float | None = None


def transcribe_message(note_id: int) -> str:
    """Transcribe note `note_id`; return what happened (for RQ's result and the logs)."""
    db = context.db()
    note = db.fetch_one("transcription.note_claim", {"id": note_id})
    if note is None:
        JOBS.labels(JOB_NAME, "ok").inc()
        return "gone"
    if not note["locked"]:
        # Another run holds it and will finish the work (or release it by dying).
        log.info("transcription already in progress", extra={"note_id": note_id})
        JOBS.labels(JOB_NAME, "ok").inc()
        return "in_progress"
    try:
        outcome = _transcribe(note)
    except Exception:
        JOBS.labels(JOB_NAME, "error").inc()
        raise
    finally:
        with suppress(DatabaseError):
            db.fetch_one("transcription.unlock", {"id": note_id})
    JOBS.labels(JOB_NAME, "ok").inc()
    return outcome


def _transcribe(note: dict[str, Any]) -> str:
    note_id = int(note["id"])
    status = note["transcription_status"]
    if status == "not_needed":
        return "not_needed"
    if status != "pending":
        _resume(note)
        return f"already_{status}"
    if note["processing_status"] != "stored":
        # The archive enqueues this job again once the audio is stored.
        log.info("voice note not archived yet", extra={"note_id": note_id})
        return "not_archived"

    started = time.perf_counter()
    outcome = _chatwoot_transcript(note) or _transcribe_audio(note)
    if outcome is None:
        return "waiting_for_archive"
    if not _finish(note, outcome):
        _resume(note_id)
        return "already_finished"
    log.info(
        "voice note transcribed" if outcome.status == "done" else f"voice note {outcome.status}",
        extra={
            "note_id": note_id,
            "provider": outcome.provider,
            "model": outcome.model,
            "audio_seconds": outcome.audio_seconds,
            "provider_seconds": round(outcome.provider_seconds, 3),
            "pipeline_seconds": round(time.perf_counter() - started - outcome.provider_seconds, 3),
            "pieces": outcome.pieces,
            "provider_calls": outcome.provider_calls,
            "error_details": outcome.error_details,
        },
    )
    note.update(transcription_status=outcome.status, transcript=outcome.text)
    _next_steps(note, outcome.provider)
    return outcome.status


# ---------------------------------------------------------------------------------------------
# where the text comes from


def _chatwoot_transcript(note: dict[str, Any]) -> Outcome | None:
    """Chatwoot's own transcript, when it arrived before ours (for every audio of the message)."""
    rows = sorted(
        (r for r in note["chatwoot_transcripts"] if str(r["text"] or "").strip()),
        key=lambda r: _as_int(r["attachment_id"]),
    )
    if not rows:
        return None
    attachments = (note.get("payload") or {}).get("attachments")
    audio_ids = {
        str(a.get("id"))
        for a in (attachments if isinstance(attachments, list) else [])
        if isinstance(a, dict) and a.get("file_type") == "audio"
    }
    if audio_ids - {str(r["attachment_id"]) for r in rows}:
        return None  # Chatwoot transcribed only some of them: ours covers all
    texts = [str(r["text"]).strip() for r in rows]
    return Outcome(
        status="done",
        provider=CHATWOOT,
        text="\n\n".join(texts),
        attachment_ids=[_as_int(r["attachment_id"]) for r in rows],
    )


def _transcribe_audio(note: dict[str, Any]) -> Outcome | None:
    try:
        ai = account_ai.for_account(int(note["chatwoot_account_id"]))
    except account_ai.KeysUnreadable as exc:
        return _failed(Outcome(status="failed", provider="unknown"), str(exc))
    try:
        provider = get_provider(ai.transcription)
    except TranscriptionError as exc:
        name = ai.transcription.effective_transcription_provider
        return _failed(Outcome(status="failed", provider=name), str(exc))
    if provider is None:
        return Outcome(status="skipped", provider="none", skip_reason="none")
    attachments: list[dict[str, Any]] = note["audio_attachments"]
    stored = [a for a in attachments if a["status"] == "stored" and a["bucket_name"] and a["object_name"]]
    if not stored:
        if any(a["status"] == "pending" for a in attachments):
            log.info("audio not archived yet", extra={"note_id": note["id"]})
            return None
        if attachments:
            states = ", ".join(
                f"attachment {a['chatwoot_attachment_id']} {a['status']}"
                + (f" ({a['error_details']})" if a.get("error_details") else "")
                for a in attachments
            )
            reason = f"no archived audio to transcribe: {states}"
        else:
            reason = "no archived audio to transcribe: the message has no audio attachment in the archive"
        return Outcome(
            status="failed", provider=provider.name, model=provider.model, error_details=reason[:500]
        )

    # The user's own language first, then the conversation's, then the account's declared one.
    language = note["language"] or ai.transcription_language or None
    try:
        skipped = _english_only(provider, ai, language) or _over_budget(note, ai, provider)
    except TranscriptionError as exc:
        return _failed(Outcome(status="failed", provider=provider.name, model=provider.model), str(exc))
    if skipped is not None:
        return skipped

    outcome = Outcome(status="done", provider=provider.name, model=provider.model)
    texts: list[str] = []
    seconds: list[float] = []
    sureness: list[tuple[float, float, float]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="transcribe-") as tmp:
            workdir = Path(tmp)
            for attachment in stored:
                outcome.attachment_ids.append(int(attachment["chatwoot_attachment_id"]))
                local = _download(note["id"], attachment, workdir)
                pieces = audio.prepare(
                    local,
                    workdir,
                    max_bytes=provider.max_upload_bytes,
                    accepted_suffixes=provider.accepted_suffixes,
                )
                outcome.pieces += len(pieces)
                piece_texts: list[str] = []
                piece_seconds: list[float] = []
                for piece in pieces:
                    result = _call(provider, piece, language, outcome)
                    piece_texts.append(result.text)
                    outcome.language = outcome.language or result.language
                    if result.audio_seconds:
                        piece_seconds.append(result.audio_seconds)
                    if result.avg_logprob is not None and result.no_speech_prob is not None:
                        sureness.append(
                            (result.avg_logprob, result.no_speech_prob, result.temperature or 0.0)
                        )
                texts.append(" ".join(t for t in piece_texts if t))
                whole = sum(piece_seconds) if len(pieces) == len(piece_seconds) else audio.duration(local)
                if whole:
                    seconds.append(whole)
    except audio.AudioError as exc:
        return _failed(outcome, str(exc))
    except TransientTranscriptionError as exc:
        return _failed(outcome, f"gave up after {outcome.provider_calls} calls: {exc}")
    except TranscriptionError as exc:
        return _failed(outcome, str(exc))
    outcome.text = "\n\n".join(t for t in texts if t)
    outcome.audio_seconds = round(sum(seconds), 3) if seconds else None
    if sureness:  # the weakest piece speaks for the note
        outcome.avg_logprob = min(p for p, _, _ in sureness)
        outcome.no_speech_prob = max(q for _, q, _ in sureness)
        outcome.temperature = max(t for _, _, t in sureness)
    return outcome


def _english_only(provider: Provider, ai: account_ai.AccountAI, language: str | None) -> Outcome | None:
    """Skipped: the note's language is known (the account declares one) and is not English, and
    the model understands English only; what it would write is nothing or English gibberish."""
    if not (ai.transcription_language and language and language != "en"):
        return None
    if not provider.english_only():
        return None
    where = "the account's local_whisper_model" if ai.own else "LOCAL_WHISPER_MODEL"
    fix = (
        f"install a multilingual faster-whisper model and set {where} to it"
        if provider.name == "local"
        else "set a multilingual transcription model"
    )
    reason = (
        f"transcription skipped: the model {provider.model} understands English only and this "
        f"voice note is in {language!r}; {fix} (flask accounts ai set {ai.account_id} ...)"
    )
    return Outcome(
        status="skipped",
        provider=provider.name,
        model=provider.model,
        language=language,
        error_details=reason[:500],
        skip_reason="english_only",
    )


def _over_budget(note: dict[str, Any], ai: account_ai.AccountAI, provider: Provider) -> Outcome | None:
    """Skipped: the account's monthly budget of audio minutes is spent (the note is kept)."""
    if not ai.budget_minutes:
        return None
    row = context.db().fetch_one(
        "transcription.account_audio_this_month", {"account_id": note["chatwoot_account_id"]}
    )
    used = float((row or {}).get("audio_seconds") or 0) / 60
    if used < ai.budget_minutes:
        return None
    reason = (
        f"transcription skipped: account {ai.account_id} has used {used:.1f} of its "
        f"{ai.budget_minutes} audio minutes this month; raise transcription_budget_minutes "
        f"(flask accounts ai set {ai.account_id} --transcription-budget-minutes N)"
    )
    return Outcome(
        status="skipped",
        provider=provider.name,
        model=provider.model,
        error_details=reason[:500],
        skip_reason="budget",
    )


def _failed(outcome: Outcome, reason: str) -> Outcome:
    outcome.status = "failed"
    outcome.error_details = f"transcription ({outcome.provider}): {reason}"[:500]
    return outcome


def _download(note_id: int, attachment: dict[str, Any], workdir: Path) -> Path:
    """The archived audio in a local file. When the object is gone, the row is read again:
    the archive may have just moved the message to its user's bucket."""

    attachment_id = attachment["chatwoot_attachment_id"]
    for _ in range(2):
        bucket, name = attachment["bucket_name"], attachment["object_name"]
        target = workdir / f"{attachment_id}{Path(name).suffix}"
        try:
            context.gcs().bucket(bucket).blob(name).download_to_filename(str(target), timeout=CALL_TIMEOUT)
            return target
        except NotFound:
            fresh = next(
                (
                    a
                    for a in context.db().fetch_all("transcription.audio_attachments", {"id": note_id})
                    if a["chatwoot_attachment_id"] == attachment_id and a["status"] == "stored"
                ),
                None,
            )
            if fresh is None or (fresh["bucket_name"], fresh["object_name"]) == (bucket, name):
                raise audio.AudioError(f"the archived audio gs://{bucket}/{name} is missing") from None
            attachment = fresh
    raise audio.AudioError(f"the archived audio of attachment {attachment_id} keeps moving; try again later")


def _call(provider: Provider, path: Path, language: str | None, outcome: Outcome) -> TranscriptionResult:
    """One piece through the provider, retried on transient errors with backoff."""
    settings = context.settings()

    def attempt() -> TranscriptionResult:
        outcome.provider_calls += 1
        started = time.perf_counter()
        try:
            result = provider.transcribe(path, language=language)
        except TranscriptionError:
            outcome.provider_seconds += time.perf_counter() - started
            raise
        # The provider's own measure: its call, without our file handling around it.
        outcome.provider_seconds += result.provider_seconds
        return result

    retrying = Retrying(
        stop=stop_after_attempt(settings.transcription_max_attempts),
        wait=_backoff(float(settings.transcription_retry_wait)),
        retry=retry_if_exception_type(TransientTranscriptionError),
        before_sleep=_log_retry,
        reraise=True,
    )
    result: TranscriptionResult = retrying(attempt)
    return result


def _backoff(base: float) -> Any:
    """Exponential backoff from `base` seconds with some jitter; a longer Retry-After wins."""

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        delay: float = base * 2 ** (state.attempt_number - 1) * (1 + random.random() / 4)
        asked = getattr(exc, "retry_after", None)
        if isinstance(asked, int | float):
            delay = max(delay, float(asked))
        return min(delay, MAX_RETRY_WAIT)

    return wait


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    log.warning(
        "transcription call failed, retrying",
        extra={
            "attempt": state.attempt_number,
            "wait_seconds": round(state.next_action.sleep, 2) if state.next_action else None,
            "reason": str(exc)[:200],
        },
    )


# ---------------------------------------------------------------------------------------------
# recording the outcome


def _finish(note: dict[str, Any], outcome: Outcome) -> bool:
    """Write the transcript object, then the row and its record; False when the row had
    already left `pending` (nothing written to it)."""
    settings = context.settings()
    gcs_path = None
    if outcome.status == "done":
        gcs_path = _write_transcript_object(note, outcome)
    rate = Decimal(settings.transcription_cost_per_minute) if outcome.provider == "openai" else Decimal(0)
    cost = Decimal(0)
    if outcome.status == "done" and outcome.audio_seconds:
        cost = (Decimal(str(outcome.audio_seconds)) / 60 * rate).quantize(Decimal("0.000001"))
    statement = {"done": "mark_done", "failed": "mark_failed", "skipped": "mark_skipped"}[outcome.status]
    with context.db().transaction() as cur:
        cur.execute(
            queries[f"transcription.{statement}"],
            {"id": note["id"], "transcript": outcome.text, "error_details": outcome.error_details},
        )
        if cur.rowcount == 0:
            return False
        cur.execute(
            queries["transcription.record"],
            {
                "id": note["id"],
                "account_id": note["chatwoot_account_id"],
                "skip_reason": outcome.skip_reason,
                "avg_logprob": outcome.avg_logprob,
                "no_speech_prob": outcome.no_speech_prob,
                "decode_temperature": outcome.temperature,
                "low_confidence": confidence.low(
                    outcome.avg_logprob, outcome.no_speech_prob, outcome.temperature
                ),
                "status": outcome.status,
                "provider": outcome.provider,
                "model": outcome.model,
                "language": outcome.language,
                "audio_seconds": outcome.audio_seconds,
                "provider_seconds": round(outcome.provider_seconds, 3) if outcome.provider_calls else None,
                "pieces": outcome.pieces,
                "provider_calls": outcome.provider_calls,
                "cost_per_minute": rate,
                "estimated_cost": cost,
                "gcs_storage_path": gcs_path,
                "error_details": outcome.error_details,
            },
        )
    account = account_label(note["chatwoot_account_id"])
    if outcome.provider_calls:
        TRANSCRIPTION_PROVIDER_SECONDS.labels(outcome.provider).observe(outcome.provider_seconds)
        ACCOUNT_PROVIDER_CALLS.labels(account, "transcription", outcome.provider).inc(outcome.provider_calls)
    if outcome.status == "done" and outcome.audio_seconds:
        TRANSCRIPTION_AUDIO_SECONDS.labels(outcome.provider).inc(outcome.audio_seconds)
        ACCOUNT_AUDIO_SECONDS.labels(account, outcome.provider).inc(outcome.audio_seconds)
    return True


def _transcript_location(note: dict[str, Any]) -> tuple[str, str] | None:
    """(bucket, object) of the note's transcript.json, beside the archived message JSON."""

    try:
        bucket, name = storage.parse_gs_uri(note.get("gcs_storage_path") or "")
    except ValueError:
        return None
    if not name.endswith(".json"):
        return None
    return bucket, storage.transcript_object(name[: -len(".json")])


def _write_transcript_object(note: dict[str, Any], outcome: Outcome) -> str | None:

    location = _transcript_location(note)
    if location is None:
        log.warning("no archived message to put the transcript beside", extra={"note_id": note["id"]})
        return None
    bucket_name, name = location
    document = {
        "meeting_note_id": note["id"],
        "chatwoot_account_id": note["chatwoot_account_id"],
        "chatwoot_message_id": note["chatwoot_message_id"],
        "attachment_ids": outcome.attachment_ids,
        "text": outcome.text or "",
        "language": outcome.language,
        "provider": outcome.provider,
        "model": outcome.model,
        "audio_seconds": outcome.audio_seconds,
        "pieces": outcome.pieces,
        "transcribed_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    written = storage.write_json(context.gcs().bucket(bucket_name), name, document)
    if not written.created:
        # A run that stopped before its database write left one: the archive is append-only,
        # so that text is the transcript, and the row must say the same.
        try:
            earlier = json.loads(storage.read_bytes(bucket_name, name))
            outcome.text = str(earlier["text"])
        except (ValueError, KeyError, TypeError):
            log.warning("unreadable transcript object kept as it is", extra={"note_id": note["id"]})
        log.info("transcript already in the archive; keeping it", extra={"note_id": note["id"]})
    return written.uri


def _resume(note_or_id: dict[str, Any] | int) -> None:
    """A finished note seen again: complete what a stopped run may have left undone."""
    db = context.db()
    note = (
        note_or_id if isinstance(note_or_id, dict) else db.fetch_one("transcription.note", {"id": note_or_id})
    )
    if note is None or note["transcription_status"] not in ("done", "failed", "skipped"):
        return
    record = db.fetch_one("transcription.get_record", {"id": note["id"]})
    if note["transcription_status"] == "done" and record is not None and not record["gcs_storage_path"]:
        path = _write_transcript_object(
            note,
            Outcome(
                status="done",
                provider=record["provider"],
                model=record["model"],
                text=note["transcript"],
                language=record["language"],
                audio_seconds=_as_float(record["audio_seconds"]),
                pieces=record["pieces"],
            ),
        )
        if path:
            db.execute("transcription.set_object", {"id": note["id"], "path": path})
    _next_steps(note, record["provider"] if record else None)


def _next_steps(note: dict[str, Any], provider: str | None) -> None:
    """The private note for agents (when asked for) and classification; both safe to repeat."""
    if (
        note["transcription_status"] == "done"
        and context.settings().transcript_private_note
        and provider != CHATWOOT
        and (note["transcript"] or "").strip()
    ):
        _post_private_note(note)
    if note["classification_status"] == "pending":
        try:
            enqueue(CLASSIFY_MESSAGE, note["id"])
        except QueueUnavailable:
            log.warning("classification not enqueued; the reconciler will", extra={"note_id": note["id"]})


def _post_private_note(note: dict[str, Any]) -> None:
    """The transcript for the agents, in the conversation, as a private note (once)."""
    if note["chatwoot_conversation_id"] is None:
        return

    content = f"{PRIVATE_NOTE_TITLE}\n\n{str(note['transcript']).strip()}"
    if len(content) > MAX_TEXT_CHARS:
        content = content[: MAX_TEXT_CHARS - 1] + "…"
    outbox.record_and_enqueue(
        note["chatwoot_account_id"],
        note["chatwoot_conversation_id"],
        "transcript",
        f"transcript:{note['id']}",
        {"content": content, "message_type": "outgoing", "private": True},
    )


def _as_int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _as_float(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
