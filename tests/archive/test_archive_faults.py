"""The archive when GCS goes away mid-job, and when a hundred new users arrive at once."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import responses

from app.users import service
from tests.helpers.archive import (
    data_url,
    ingest,
    note,
    objects,
    run_archive,
    storage_url,
    text_message,
    voice_note,
    work_until,
)

pytestmark = pytest.mark.usefixtures("archive_env")

OGG = b"OggS\x00\x02" + bytes(range(256)) * 40


@pytest.mark.faults
def test_gcs_stopped_mid_job_leaves_the_row_retryable_and_loses_nothing(
    services: Any, http: responses.RequestsMock, public_resolver: Any, run_jobs: Any, redis_conn: Any
) -> None:
    from rq.registry import ScheduledJobRegistry

    from app.archive import storage

    stop_once = {"done": False}

    def serve_audio(request: Any) -> tuple[int, dict[str, str], bytes]:
        if not stop_once["done"]:
            stop_once["done"] = True
            services.stop_gcs()  # the JSON is written; the audio will find GCS gone
        return 200, {"Content-Type": "audio/ogg"}, OGG

    http.add(
        responses.GET,
        data_url(5521, "audioclip.ogg"),
        status=302,
        headers={"Location": storage_url(5521, "audioclip.ogg")},
    )
    http.add_callback(responses.GET, storage_url(5521, "audioclip.ogg"), callback=serve_audio)
    note_id = ingest(voice_note())
    try:
        run_archive(run_jobs)
        row = note(note_id)
        assert row["processing_status"] == "received"
        assert row["error_details"] == "retrying: GCS unavailable"
        registry = ScheduledJobRegistry("archive", connection=redis_conn)
        assert f"archive_{note_id}" in registry.get_job_ids()
    finally:
        services.start_gcs()
    assert services.stack.ports()["gcs"] == int(services.env["STORAGE_EMULATOR_HOST"].rsplit(":", 1)[1])
    # The emulator came back empty (it keeps data in memory): the retry writes everything again.
    redis_conn.zadd(registry.key, {f"archive_{note_id}": 0})  # the retry is due now
    work_until(redis_conn, lambda: note(note_id)["processing_status"] == "stored", timeout=60)
    bucket = storage.bucket_name("account_1")
    assert set(objects(bucket)) == {
        "whatsapp-messages/2026-11-20/9877.json",
        "whatsapp-messages/2026-11-20/9877/5521.ogg",
    }
    assert objects(bucket)["whatsapp-messages/2026-11-20/9877/5521.ogg"].download_as_bytes() == OGG
    assert note(note_id)["error_details"] is None


@pytest.mark.slow
def test_a_hundred_new_users_at_once_are_all_archived(
    use_settings: Any, redis_conn: Any, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    """Bucket creation is rate-limited across workers: jobs wait or come back later, none is lost."""
    from app import context
    from app.archive import storage

    db, gcs = context.db(), context.gcs()

    rate_per_second = 10
    use_settings(gcs_bucket_create_rate=f"{rate_per_second} per 1 second")
    monkeypatch.setattr(storage, "INLINE_WAIT_SECONDS", 0.1)
    ids = []
    for i in range(100):
        service.link_contact(1, f"user-{i:03d}", contact_id=1000 + i)
        ids.append(ingest(text_message(6000 + i, contact_id=1000 + i)))

    def all_stored() -> bool:
        with db.transaction() as cur:
            cur.execute("SELECT count(*) AS n FROM meeting_notes WHERE processing_status = 'stored'")
            return bool(cur.fetchone()["n"] == 100)

    with caplog.at_level(logging.INFO, logger="app.archive.jobs"):
        work_until(redis_conn, all_stored, timeout=180)
    for i, note_id in enumerate(ids):
        row = note(note_id)
        assert row["user_id"] == f"user-{i:03d}"
        bucket, name = storage.parse_gs_uri(row["gcs_storage_path"])
        assert bucket == storage.bucket_name(f"user-{i:03d}")
        assert name in objects(bucket)
    assert len({b.name for b in gcs.list_buckets()}) == 100
    # Jobs were held back, and creations kept to the rate.
    assert any("throttled" in r.getMessage() for r in caplog.records)
    with db.transaction() as cur:
        cur.execute("SELECT extract(epoch FROM created_at) AS t FROM gcs_buckets ORDER BY created_at")
        times = [float(r["t"]) for r in cur.fetchall()]
    assert len(times) == 100
    # At most `rate` creations in any second: 100 of them span at least 9 s (less the jitter of
    # recording each creation after its call, on a busy machine).
    assert times[-1] - times[0] >= (len(times) - rate_per_second) / rate_per_second - 0.5
    window = [times[i + rate_per_second] - times[i] for i in range(len(times) - rate_per_second)]
    assert min(window) >= 0.5
