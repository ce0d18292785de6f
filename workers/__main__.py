"""Worker entry: `python -m workers [--queues archive,classify,send,maintenance] [--processes N]`.

General queues are served by non-forking workers (a fork per job costs ~27 ms here), kept
alive by RQ's worker pool, which restarts a worker that dies. Transcription runs in its own
process (`--queues transcribe`), which keeps the speech model loaded between jobs.
"""

from __future__ import annotations

import argparse
import logging
import sys

from app import context, logs
from app.config import ConfigError
from app.jobs import ALL_QUEUES, GENERAL_QUEUES, TRANSCRIBE_QUEUE
from app.transcription import describe, missing_requirement
from workers.metered import MeteredWorker, QuietWorkerPool

log = logging.getLogger("workers")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m workers", description=__doc__)
    parser.add_argument(
        "--queues",
        default=None,
        help=(
            f"comma-separated queues, in priority order (default: {','.join(GENERAL_QUEUES)}, "
            f"and {TRANSCRIBE_QUEUE} too when the transcription provider is none)"
        ),
    )
    parser.add_argument(
        "--processes", type=int, default=None, help="worker processes (default: WORKER_PROCESSES)"
    )
    parser.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = context.settings()
    except ConfigError as exc:
        sys.stderr.write(f"configuration error: {exc}\n")
        return 2
    logs.configure_logging(settings.log_level, logs.settings_secrets(settings))
    if args.queues is None:
        queues = list(GENERAL_QUEUES)
        if settings.effective_transcription_provider == "none":
            # Nothing to load: the general workers mark voice notes skipped and pass them on.
            queues.append(TRANSCRIBE_QUEUE)
    else:
        queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    unknown = [q for q in queues if q not in ALL_QUEUES]
    if unknown:
        sys.stderr.write(f"unknown queue(s): {', '.join(unknown)}; known: {', '.join(ALL_QUEUES)}\n")
        return 2
    processes = args.processes or settings.worker_processes
    if "transcribe" in queues and (missing := missing_requirement(settings)):
        sys.stderr.write(f"configuration error: {missing}\n")
        return 2
    log.info(
        "worker starting",
        extra={
            "queues": queues,
            "processes": processes,
            **describe(settings),
            "generation_provider": settings.effective_generation_provider,
        },
    )
    pool = QuietWorkerPool(
        queues, connection=context.redis(), num_workers=processes, worker_class=MeteredWorker
    )
    pool.start(burst=args.burst, logging_level=settings.log_level)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
