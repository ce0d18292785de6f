"""Queues and job names. Jobs are enqueued by dotted name, so the web process never imports
what only workers need, and by a job id derived from the row, so a second enqueue is a no-op."""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from redis.exceptions import RedisError
from rq import Queue, Retry
from rq.exceptions import DuplicateJobError
from rq.job import Job
from rq.scripts import UNIQUE_ENQUEUE_SCRIPT, _build_hset_args, get_unique_enqueue_script
from rq.utils import get_call_string, now, utcformat

from app import context

log = logging.getLogger(__name__)

ARCHIVE_QUEUE = "archive"
TRANSCRIBE_QUEUE = "transcribe"
CLASSIFY_QUEUE = "classify"
SEND_QUEUE = "send"
MAINTENANCE_QUEUE = "maintenance"
GENERATE_QUEUE = "generate"

GENERAL_QUEUES = (MAINTENANCE_QUEUE, ARCHIVE_QUEUE, CLASSIFY_QUEUE, SEND_QUEUE, GENERATE_QUEUE)
"""Served by the general worker processes, in this order of priority. Maintenance first: its
jobs are few (the periodic reconcile and backfill, moves of archives), and the reconciler must
not wait behind the backlog it is there to repair."""
ALL_QUEUES = (*GENERAL_QUEUES, TRANSCRIBE_QUEUE)

RESULT_TTL = 0
"""Seconds a finished job is kept: none, so its id is free again for a later, deliberate enqueue."""
FAILURE_TTL = 7 * 24 * 3600
"""Seconds a failed job stays in RQ's failed registry (the database keeps the lasting state)."""


CRON_LEADER_KEY = "meeting-notes:cron:leader"
"""Redis lock of the one `python -m workers.cron` process that enqueues the periodic jobs."""
CRON_LEADER_TTL = 30
"""Seconds the leader lock lasts without renewal; a standby takes over after it expires."""


class QueueUnavailable(Exception):
    """Redis cannot be reached; the row stays durable and the reconciler enqueues it later."""


@dataclass(frozen=True)
class JobSpec:
    queue: str
    func: str
    """Dotted path of the job function."""
    id_prefix: str
    retry_intervals: tuple[int, ...] = ()
    """Seconds before each automatic retry of a failed run (RQ Retry); empty: no retry."""
    timeout: int | None = None
    """Seconds a run may take; None: JOB_TIMEOUT (see `timeout_of`)."""


ARCHIVE_RETRY_INTERVALS = (5, 30, 120, 600, 1800)
"""Seconds between the archive's retries (GCS or Chatwoot media briefly unavailable), then `error`."""
ARCHIVE_MESSAGE = JobSpec(
    ARCHIVE_QUEUE, "workers.archive.archive_message", "archive", retry_intervals=ARCHIVE_RETRY_INTERVALS
)
ARCHIVE_UPDATE = JobSpec(
    ARCHIVE_QUEUE, "workers.archive.archive_update", "archive-update", retry_intervals=ARCHIVE_RETRY_INTERVALS
)
ATTACHMENT_RETRY_INTERVALS = (30, 120, 600)
"""Seconds between the retries of an admin's retry of a message's unavailable attachments."""
ARCHIVE_ATTACHMENTS = JobSpec(
    ARCHIVE_QUEUE,
    "workers.archive.archive_attachments",
    "archive-attachments",
    retry_intervals=ATTACHMENT_RETRY_INTERVALS,
)
TRANSCRIBE_TIMEOUT = 3600
"""Seconds a transcription may run: a long voice note on a CPU, or several pieces with retries."""
TRANSCRIBE_MESSAGE = JobSpec(
    TRANSCRIBE_QUEUE, "workers.transcribe.transcribe_message", "transcribe", timeout=TRANSCRIBE_TIMEOUT
)
CLASSIFY_RETRY_INTERVALS = (5, 30, 120)
"""Seconds between classification retries (database briefly down, conversation busy)."""
CLASSIFY_MESSAGE = JobSpec(
    CLASSIFY_QUEUE, "workers.classify.classify_message", "classify", retry_intervals=CLASSIFY_RETRY_INTERVALS
)
CLASSIFY_UPDATE = JobSpec(
    CLASSIFY_QUEUE,
    "workers.classify.classify_update",
    "classify-update",
    retry_intervals=CLASSIFY_RETRY_INTERVALS,
)
"""A version of our own message with an answer (the web widget's) or a refusal (the channel's)."""
SEND_RETRY_INTERVALS = (10, 30, 120, 600, 1800)
"""Seconds between send attempts after a 429, a connection failure or an unknown outcome."""
SEND_OUTBOX = JobSpec(SEND_QUEUE, "workers.send.send_outbox", "send", retry_intervals=SEND_RETRY_INTERVALS)
GENERATE_RETRY_INTERVALS = (30, 120, 600)
"""Seconds between drafting attempts of an order (model errors, bucket set-up)."""
GENERATE_ORDER = JobSpec(
    GENERATE_QUEUE, "workers.generate.generate_order", "generate", retry_intervals=GENERATE_RETRY_INTERVALS
)
DELIVER_RETRY_INTERVALS = (30, 120, 600, 1800)
"""Seconds between attempts to deliver a ready order (notice, copy in the user's bucket)."""
DELIVER_ORDER = JobSpec(
    GENERATE_QUEUE, "workers.generate.deliver_order", "deliver", retry_intervals=DELIVER_RETRY_INTERVALS
)


REHOME_RETRY_INTERVALS = (30, 120, 600, 1800)
"""Seconds between retries of a move of a contact's archive (GCS briefly unavailable)."""
REHOME_TIMEOUT = 3600
"""Seconds a move may take (a contact with a long history)."""
REHOME = JobSpec(
    MAINTENANCE_QUEUE,
    "workers.rehome.rehome_request",
    "rehome",
    retry_intervals=REHOME_RETRY_INTERVALS,
    timeout=REHOME_TIMEOUT,
)


def timeout_of(spec: JobSpec) -> int:
    """Seconds a run of `spec` may take: its own limit, else JOB_TIMEOUT (never RQ's default)."""
    return spec.timeout if spec.timeout is not None else context.settings().job_timeout


def job_id(spec: JobSpec, *ids: object) -> str:
    # RQ 3 accepts only letters, digits, underscores and dashes in a job id.
    return "_".join([spec.id_prefix, *(str(i) for i in ids)])


def enqueue(
    spec: JobSpec,
    *args: Any,
    connection: Any = None,
    suffix: str = "",
    retry: Any = None,
    timeout: int | None = None,
    at_front: bool = False,
    delay_seconds: int = 0,
) -> bool:
    """Enqueue `spec` with `args` under an id made of its prefix and the args.

    Returns False when a job with that id is already queued, scheduled or running.
    Raises QueueUnavailable when Redis is down.
    """
    conn = connection if connection is not None else context.redis()
    jid = job_id(spec, *args) + (f"_{suffix}" if suffix else "")
    registered = (id(conn), spec.queue)
    if registered in _registered_queues and not (suffix or retry or timeout or at_front or delay_seconds):
        # The common case (the webhook's archive job): RQ's job, built from a template.
        try:
            return _enqueue_from_template(spec, conn, jid, args)
        except (RedisError, OSError) as exc:
            _registered_queues.discard(registered)
            raise QueueUnavailable(type(exc).__name__) from None
    if retry is None and spec.retry_intervals:
        retry = Retry(max=len(spec.retry_intervals), interval=list(spec.retry_intervals))
    queue = Queue(spec.queue, connection=conn)
    options: dict[str, Any] = {
        "job_id": jid,
        "unique": True,
        "result_ttl": RESULT_TTL,
        "failure_ttl": FAILURE_TTL,
        "retry": retry,
        "at_front": at_front,
    }
    options["job_timeout"] = timeout if timeout is not None else timeout_of(spec)
    try:
        if delay_seconds > 0:
            queue.enqueue_in(timedelta(seconds=delay_seconds), spec.func, *args, **options)
        else:
            # RQ adds the queue to its set of queues (a round trip of its own) on each enqueue;
            # once per connection is enough: later ones leave it in a pipeline never sent.
            if registered in _registered_queues:
                options["pipeline"] = conn.pipeline(transaction=False)
            queue.enqueue(spec.func, *args, **options)
    except DuplicateJobError:
        _registered_queues.add(registered)
        return False
    except (RedisError, OSError) as exc:
        _registered_queues.discard(registered)
        raise QueueUnavailable(type(exc).__name__) from None
    _registered_queues.add(registered)
    return True


_registered_queues: set[tuple[int, str]] = set()
"""(connection id, queue name) pairs whose queue RQ has registered through this process."""


@dataclass
class _Template:
    """A job of one JobSpec as RQ writes it (its hash fields, with default options), and where
    the fields that differ from job to job are."""

    fields: list[Any]
    positions: dict[str, int]
    queue_key: str
    serializer: Any


_templates: dict[tuple[str, int], _Template] = {}


def _template(spec: JobSpec, conn: Any) -> _Template:
    """RQ builds a job of `spec` (never saved) and says how it stores it: the template."""
    timeout = timeout_of(spec)
    found = _templates.get((spec.id_prefix, timeout))
    if found is None:
        queue = Queue(spec.queue, connection=conn)
        retry = (
            Retry(max=len(spec.retry_intervals), interval=list(spec.retry_intervals))
            if spec.retry_intervals
            else None
        )
        job = queue.create_job(
            spec.func,
            args=(0,),
            job_id=job_id(spec, 0),
            result_ttl=RESULT_TTL,
            failure_ttl=FAILURE_TTL,
            retry=retry,
            timeout=timeout,
        )
        queue._prepare_for_queue(job)
        fields = _build_hset_args(job)  # type: ignore[no-untyped-call]
        positions = {str(fields[i]): i + 1 for i in range(0, len(fields), 2)}
        missing = _PER_JOB_FIELDS - positions.keys()
        if missing:
            raise RuntimeError(f"RQ's job hash has no {sorted(missing)}: the template cannot be used")
        found = _Template(fields, positions, queue.key, job.serializer)
        _templates[(spec.id_prefix, timeout)] = found
    return found


_PER_JOB_FIELDS = frozenset({"data", "description", "created_at", "enqueued_at"})
"""The fields of RQ's job hash that differ between two jobs of one JobSpec (besides the id)."""


def enqueue_many(items: Sequence[tuple[JobSpec, int]], connection: Any, pipeline: Any) -> None:
    """Add an enqueue of each (spec, row id) to a pipeline of `connection` (the caller executes
    it): one round trip for a batch's next steps. As `enqueue`, an existing job id is left as it is.

    RQ's unique-enqueue script is loaded once per connection and called by its hash (a redis-py
    Script in a pipeline asks Redis whether it knows the script on every execution); a Redis
    that forgot it answers NoScriptError, and the caller runs the pipeline again.
    """
    sha = _script_shas.get(id(connection))
    if sha is None:
        sha = str(connection.script_load(UNIQUE_ENQUEUE_SCRIPT))
        _script_shas[id(connection)] = sha
    for spec, row_id in items:
        template = _template(spec, connection)
        jid = job_id(spec, row_id)
        pipeline.evalsha(
            sha,
            2,
            Job.key_for(jid),
            template.queue_key,
            jid,
            "R",
            -1,
            *_job_fields(template, spec, (row_id,)),
        )


def forget_scripts(connection: Any) -> None:
    """After a NoScriptError: load the scripts again on the next `enqueue_many`."""
    _script_shas.pop(id(connection), None)


_script_shas: dict[int, str] = {}


def _job_fields(template: _Template, spec: JobSpec, args: tuple[Any, ...]) -> list[Any]:
    """The job hash of one call: the template's, with its own call, description and times."""
    fields = list(template.fields)
    at = template.positions
    fields[at["data"]] = zlib.compress(template.serializer.dumps((spec.func, None, args, {})))
    fields[at["description"]] = get_call_string(spec.func, args, {})
    fields[at["created_at"]] = fields[at["enqueued_at"]] = utcformat(now())
    return fields


def _enqueue_from_template(spec: JobSpec, conn: Any, jid: str, args: tuple[Any, ...]) -> bool:
    """What `Queue.enqueue(spec.func, *args, job_id=jid, unique=True, ...)` does, in a third of
    its CPU time: the job's hash is the template's with its own call, description and times,
    written by RQ's own atomic script (saved and queued unless a job with that id exists)."""
    template = _template(spec, conn)
    fields = _job_fields(template, spec, args)
    script = get_unique_enqueue_script(conn)  # type: ignore[no-untyped-call]
    return bool(script(keys=[Job.key_for(jid), template.queue_key], args=[jid, "R", -1, *fields]))


def queue_depths(connection: Any = None, queues: Sequence[str] = ALL_QUEUES) -> dict[str, int]:
    """Jobs waiting in each queue."""
    conn = connection if connection is not None else context.redis()
    return {name: Queue(name, connection=conn).count for name in queues}


# -- records: exports and legal holds (app/records/) ------------------------------------------

EXPORT_RETRY_INTERVALS = (60, 300, 1800)
"""Seconds between attempts to build an export (GCS or PostgreSQL briefly unavailable)."""
EXPORT_TIMEOUT = 6 * 3600
"""Seconds an export may take (a long archive with much media)."""
EXPORT_ARCHIVE = JobSpec(
    MAINTENANCE_QUEUE,
    "workers.records.export_archive",
    "export",
    retry_intervals=EXPORT_RETRY_INTERVALS,
    timeout=EXPORT_TIMEOUT,
)
HOLD_RETRY_INTERVALS = (30, 120, 600, 1800)
"""Seconds between attempts to set or release a user's GCS holds."""
APPLY_HOLD = JobSpec(
    MAINTENANCE_QUEUE,
    "workers.records.apply_hold",
    "hold",
    retry_intervals=HOLD_RETRY_INTERVALS,
    timeout=3600,
)
