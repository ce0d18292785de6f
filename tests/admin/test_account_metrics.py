"""`/metrics` by Chatwoot account: audio seconds and provider calls, the busiest accounts by name
and the rest added up as `other`, in one process or across the processes' files."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families

from app.metrics import AccountsBounded
from tests.helpers.admin import ROOT

pytestmark = pytest.mark.usefixtures("admin_env")

AUDIO = "meeting_notes_account_audio_seconds_total"
CALLS = "meeting_notes_account_provider_calls_total"


def by_account(text: str, name: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                account = sample.labels["account"]
                out[account] = out.get(account, 0.0) + sample.value
    return out


def test_the_busiest_accounts_keep_their_label_and_the_rest_add_up_as_other() -> None:
    from prometheus_client import generate_latest

    source = CollectorRegistry()
    audio = Counter("meeting_notes_account_audio_seconds", "audio", ["account", "provider"], registry=source)
    for account, seconds in (("1", 50), ("2", 5), ("3", 500), ("4", 7), ("5", 1)):
        audio.labels(account, "openai").inc(seconds)
    audio.labels("2", "local").inc(40)  # account 2: 45 in all, over account 4's 7
    bounded = CollectorRegistry(auto_describe=False)
    bounded.register(AccountsBounded(source, top=3))
    found = by_account(generate_latest(bounded).decode(), AUDIO)
    assert found == {"3": 500, "1": 50, "2": 45, "other": 8}
    assert sum(found.values()) == 603


@pytest.fixture
def whisper(db: Any, gcs: Any, redis_conn: Any, use_settings: Any) -> Iterator[Any]:
    from tests.helpers.transcription import harness, require_audio_tools

    require_audio_tools()
    with harness(db, gcs, redis_conn, use_settings) as ready:
        ready.openai()
        yield ready


def test_a_transcription_counts_for_its_account(client: Any, whisper: Any, use_settings: Any) -> None:
    from app.transcription.jobs import transcribe_message

    use_settings(metrics_top_accounts=1000)
    before = client.get("/metrics").get_data(as_text=True)
    note = whisper.note()
    assert transcribe_message(note.id) == "done"
    after = client.get("/metrics").get_data(as_text=True)
    seconds = float(whisper.record(note)["audio_seconds"])
    grown = by_account(after, AUDIO).get("1", 0) - by_account(before, AUDIO).get("1", 0)
    assert grown == pytest.approx(seconds)
    assert by_account(after, CALLS).get("1", 0) - by_account(before, CALLS).get("1", 0) == 1


def test_the_label_set_stays_bounded_across_processes(
    environ: dict[str, str], tmp_path: Path, use_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers count forty accounts into PROMETHEUS_MULTIPROC_DIR; a scrape names three."""
    from app.admin.metrics_http import scrape

    folder = tmp_path / "prometheus"
    folder.mkdir()
    code = (
        "from app.metrics import ACCOUNT_AUDIO_SECONDS, ACCOUNT_PROVIDER_CALLS\n"
        "for account in range(1, 41):\n"
        "    ACCOUNT_AUDIO_SECONDS.labels(str(account), 'local').inc(account)\n"
        "    ACCOUNT_PROVIDER_CALLS.labels(str(account), 'transcription', 'local').inc()\n"
    )
    for _ in range(2):  # two worker processes
        result = subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env={**os.environ, **environ, "PROMETHEUS_MULTIPROC_DIR": str(folder)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr[-2000:]
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(folder))
    use_settings(metrics_top_accounts=3)
    text = scrape().decode()
    audio = by_account(text, AUDIO)
    assert audio == {"40": 80, "39": 78, "38": 76, "other": 2 * sum(range(1, 38))}
    calls = by_account(text, CALLS)
    assert len(calls) == 4 and sum(calls.values()) == 80 and calls["other"] == 74
