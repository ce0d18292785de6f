"""Exports of a user's archive: the zip, its manifest, the signed URL, the record of who did what,
deletion and expiry; memory that does not grow with the archive."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import urllib.request
import zipfile
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import pytest
import responses
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from app import context
from app.records import exports, holds
from tests.helpers.archive import ingest
from tests.helpers.common import ROOT, add_user, load_fixture
from tests.records.conftest import archive_user

pytestmark = pytest.mark.usefixtures("records_env")

ADMIN = {"Authorization": "Bearer test-admin-token"}


def _zip_of(export: dict[str, Any]) -> bytes:
    blob = context.gcs().bucket(export["bucket_name"]).blob(export["object_name"])
    return bytes(blob.download_as_bytes())


def _build_in_subprocess(export_id: int, environ: dict[str, str]) -> dict[str, Any]:
    """Build an export in a process of its own; its peak RSS (kB) and the zip's size."""
    code = (
        "import json, resource\n"
        "from app.records import exports\n"
        f"built = exports.build({export_id})\n"
        "print(json.dumps({'peak_kb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,"
        " 'size': built.size_bytes, 'status': built.status}))\n"
    )
    env = {**environ, "PYTHONPATH": str(ROOT), "NO_GCE_CHECK": "true"}
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _check_manifest(data: bytes, export: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Every byte of the zip is accounted for: each file is in the manifest with its size and
    SHA-256, and the manifest lists nothing that is not there. Returns (manifest, JSON lines)."""
    assert hashlib.sha256(data).hexdigest() == export["sha256"]
    assert len(data) == export["size_bytes"]
    root = f"export-{export['id']}/"
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None
        names = archive.namelist()
        assert names[-1] == root + "manifest.json"
        manifest = json.loads(archive.read(root + "manifest.json"))
        listed = {f["path"]: f for f in manifest["files"]}
        assert set(listed) == set(names) - {root + "manifest.json"}
        for name in listed:
            content = archive.read(name)
            assert listed[name]["size"] == len(content), name
            assert listed[name]["sha256"] == hashlib.sha256(content).hexdigest(), name
        lines = [json.loads(line) for line in archive.read(root + "messages.jsonl").splitlines()]
    assert manifest["counts"]["files"] == len(listed)
    assert manifest["counts"]["bytes"] == sum(f["size"] for f in listed.values())
    return manifest, lines


# ------------------------------------------------------------------------------------------
# bad input


def test_an_export_of_an_unknown_user_is_refused(client: Any, runner: Any) -> None:
    answer = client.post("/admin/users/nobody/exports", headers=ADMIN, json={})
    assert answer.status_code == 404
    assert answer.get_json() == {"error": "not_found", "detail": "no user 'nobody'"}
    result = runner.invoke(args=["users", "export", "nobody"])
    assert result.exit_code == 1
    assert "no user 'nobody'" in result.output
    assert context.db().fetch_one("exports.export_get", {"export_id": 1}) is None


def test_url_of_an_unknown_or_unfinished_export(client: Any) -> None:
    add_user("ana")
    assert client.post("/admin/exports/99/url", headers=ADMIN, json={}).status_code == 404
    export = exports.request("ana", "test", queue=False)
    answer = client.post(f"/admin/exports/{export['id']}/url", headers=ADMIN, json={})
    assert answer.status_code == 409
    assert "is pending" in answer.get_json()["detail"]


# ------------------------------------------------------------------------------------------
# the zip


@pytest.mark.slow
def test_an_archive_of_2000_messages_with_media_is_accounted_for_and_memory_stays_flat(
    http: responses.RequestsMock, environ: dict[str, str]
) -> None:
    from app.archive.jobs import archive_update

    megabyte_of_audio = b"OggS" + os.urandom(1024 * 1024)
    big = archive_user(http, "big-user", 601, texts=1950, voice_notes=50, audio=megabyte_of_audio)
    # Ten of the messages were edited in Chatwoot: each edit is an archived update.
    first = 601 * 100_000
    for i in range(10):
        update = load_fixture("message_created__incoming_text")
        update.update(
            event="message_updated",
            id=first + i,
            content=f"note number {i}, corrected",
            created_at=f"2026-01-05T09:{i:02d}:00Z",
            account={"id": 1, "name": "Test"},
        )
        for sender in (update["sender"], update["conversation"]["meta"]["sender"]):
            sender.update(id=601, phone_number=None, identifier=None)
        update["conversation"]["contact_inbox"]["contact_id"] = 601
        update["conversation"]["messages"] = []
        ingest(update, enqueue=False)
    for row in context.db().fetch_all("exports.export_items", {"user_id": "big-user"}):
        if row["kind"] == "update":
            archive_update(int(row["update_id"]))
    small = archive_user(http, "small-user", 602, texts=100, voice_notes=2)

    small_export = exports.request(small.user_id, "test", queue=False)
    big_export = exports.request(big.user_id, "test", queue=False)
    small_run = _build_in_subprocess(small_export["id"], environ)
    big_run = _build_in_subprocess(big_export["id"], environ)
    export = exports.get(big_export["id"])
    assert export["status"] == big_run["status"] == "done"

    manifest, lines = _check_manifest(_zip_of(export), export)
    counts = manifest["counts"]
    assert counts == {
        "messages": 2000,
        "updates": 10,
        "attachments": 50,
        "transcripts": 50,
        "files": 101,
        "bytes": counts["bytes"],
        "missing": 0,
    }
    assert manifest["missing"] == []
    assert export["summary"]["counts"] == counts
    # Every message and update, in time order (the edits arrived last), each with its archived copy.
    assert len(lines) == 2010
    assert manifest["time_range"] == {"first": "2026-01-05T09:00:00+00:00", "last": lines[-1]["received_at"]}
    assert [line["type"] for line in lines[-10:]] == ["update"] * 10
    assert sum(1 for line in lines if line["type"] == "message") == 2000
    times = [line.get("sent_at") or line["received_at"] for line in lines if line["type"] == "message"]
    assert times == sorted(times)
    by_id = {line["message_id"]: line for line in lines if line["type"] == "message"}
    assert by_id[str(first + 7)]["payload"]["content"] == "note number 7 about the quarterly plan"
    edits = [line for line in lines if line["type"] == "update"]
    assert {e["payload"]["content"] for e in edits} == {f"note number {i}, corrected" for i in range(10)}
    # The media are the archived objects, byte for byte.
    listed = {f["path"]: f for f in manifest["files"]}
    voice = [line for line in lines if line["type"] == "message" and line["attachments"]]
    assert len(voice) == 50
    for line in voice[:5]:
        attachment = line["attachments"][0]
        source = listed[attachment["file"]]["source"]
        bucket, name = source[5:].split("/", 1)
        original = context.gcs().bucket(bucket).blob(name).download_as_bytes()
        assert listed[attachment["file"]]["sha256"] == hashlib.sha256(original).hexdigest()
        assert line["transcript"].startswith("voice note")
        assert line["transcript_file"].endswith("/transcript.json")
    # Memory: the big export's data is some 50 MB more than the small one's; the process's peak
    # is not (the upload's chunk, a piece of a file and a line at a time are all it holds).
    assert big_run["size"] - small_run["size"] > 45 * 1024 * 1024
    growth_mb = (big_run["peak_kb"] - small_run["peak_kb"]) / 1024
    print(f"peak RSS: small {small_run['peak_kb'] / 1024:.0f} MB, big {big_run['peak_kb'] / 1024:.0f} MB")
    assert growth_mb < 20, growth_mb


def test_a_user_with_nothing_archived_gets_an_empty_export(db: Any) -> None:
    add_user("empty")
    export = exports.request("empty", "test", queue=False)
    built = exports.build(export["id"])
    assert built.status == "done"
    found = exports.get(export["id"])
    manifest, lines = _check_manifest(_zip_of(found), found)
    assert lines == []
    assert manifest["counts"]["messages"] == 0 and manifest["time_range"] == {"first": None, "last": None}
    assert found["object_name"] == f"exports/{export['id']}/archive-1.zip"


def test_a_finished_export_is_not_built_again(http: responses.RequestsMock) -> None:
    archive_user(http, "ana", 603, texts=3)
    export = exports.request("ana", "test", queue=False)
    first = exports.build(export["id"])
    again = exports.build(export["id"])
    assert again.status == "done" and again.object_name == first.object_name
    objects = [
        b.name for b in context.gcs().list_blobs(exports.get(export["id"])["bucket_name"], prefix="exports/")
    ]
    assert objects == [first.object_name]
    assert [e["event"] for e in exports.get(export["id"])["events"]] == ["requested", "built"]


def test_a_message_whose_archived_copy_is_gone_is_exported_from_what_was_received(
    http: responses.RequestsMock,
) -> None:
    from app.archive import storage

    made = archive_user(http, "ana", 604, texts=2)
    gone = context.db().fetch_one("orders.note_get", {"id": made.note_ids[0]})
    assert gone is not None
    bucket, name = storage.parse_gs_uri(gone["gcs_storage_path"])
    storage.delete_object(bucket, name)
    export = exports.request("ana", "test", queue=False)
    exports.build(export["id"])
    found = exports.get(export["id"])
    manifest, lines = _check_manifest(_zip_of(found), found)
    assert manifest["missing"] == [
        {"object": name, "reason": "archived object not found", "note_id": made.note_ids[0]}
    ]
    assert lines[0]["payload_source"] == "database (archived object not found)"
    assert lines[0]["payload"]["content"] == "note number 0 about the quarterly plan"
    assert lines[1]["archived_object"].endswith(".json")


# ------------------------------------------------------------------------------------------
# handing it out


def _service_account_key() -> tuple[str, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return pem, key.public_key()


def _verify_v4(url: str, public_key: Any) -> dict[str, str]:
    """Check a V4 signed URL the way GCS does (canonical request, string to sign, RSA-SHA256)."""
    parts = urlsplit(url)
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    signature = params.pop("X-Goog-Signature")
    query = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(params.items()))
    canonical = "\n".join(["GET", parts.path, query, f"host:{parts.netloc}", "", "host", "UNSIGNED-PAYLOAD"])
    scope = params["X-Goog-Credential"].split("/", 1)[1]
    to_sign = "\n".join(
        ["GOOG4-RSA-SHA256", params["X-Goog-Date"], scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    public_key.verify(bytes.fromhex(signature), to_sign.encode(), padding.PKCS1v15(), hashes.SHA256())
    return params


def test_the_export_is_handed_out_as_a_signed_url_that_expires_and_is_recorded(
    http: responses.RequestsMock, client: Any, run_jobs: Any, use_settings: Any
) -> None:
    pem, public_key = _service_account_key()
    use_settings(
        gcs_private_key=pem,
        gcs_client_email="archiver@test-project.iam.gserviceaccount.com",
        gcs_private_key_id="key-1",
        export_url_ttl=900,
    )
    archive_user(http, "ana", 605, texts=5, voice_notes=1)
    answer = client.post("/admin/users/ana/exports", headers=ADMIN, json={"by": "Dana (DPO)"})
    assert answer.status_code == 202
    export_id = answer.get_json()["id"]
    assert answer.get_json()["queued"] is True
    run_jobs(queues=("maintenance",))
    shown = client.get(f"/admin/exports/{export_id}", headers=ADMIN).get_json()
    assert shown["status"] == "done" and shown["summary"]["counts"]["messages"] == 6

    link = client.post(f"/admin/exports/{export_id}/url", headers=ADMIN, json={"by": "Dana (DPO)"}).get_json()
    assert link["signed"] is True
    params = _verify_v4(link["url"], public_key)
    assert params["X-Goog-Algorithm"] == "GOOG4-RSA-SHA256"
    assert params["X-Goog-Expires"] == "900"
    assert params["X-Goog-Credential"].startswith("archiver@test-project.iam.gserviceaccount.com/")
    assert params["response-content-disposition"] == f'attachment; filename="export-{export_id}.zip"'
    expires = datetime.fromisoformat(link["expires_at"])
    assert timedelta(seconds=890) < expires - datetime.now(UTC) <= timedelta(seconds=900)
    # The emulator serves the object at the signed address (GCS alone checks the signature and
    # the expiry: the signature is checked above the way GCS checks it).
    with urllib.request.urlopen(link["url"], timeout=10) as got:
        data = got.read()
    assert hashlib.sha256(data).hexdigest() == shown["sha256"]
    events = exports.get(export_id)["events"]
    assert [e["event"] for e in events] == ["requested", "built", "url"]
    assert events[0]["actor"].startswith("Dana (DPO) (admin API, ")
    assert events[2]["actor"].startswith("Dana (DPO)") and events[2]["detail"]["signed"] is True


def test_the_cli_builds_the_export_and_prints_a_url(http: responses.RequestsMock, runner: Any) -> None:
    archive_user(http, "ana", 606, texts=2)
    result = runner.invoke(args=["users", "export", "ana", "--by", "ops"])
    assert result.exit_code == 0, result.output
    assert "messages: 2" in result.output
    url = result.output.strip().splitlines()[-1]
    assert url.startswith(context.settings().storage_emulator_host)
    with urllib.request.urlopen(url, timeout=10) as got:
        assert zipfile.ZipFile(io.BytesIO(got.read())).testzip() is None
    shown = runner.invoke(args=["exports", "show", "1"])
    assert "ops" in shown.output and "built" in shown.output and "url" in shown.output


# ------------------------------------------------------------------------------------------
# deletion


def test_deleting_an_export_is_refused_while_the_user_is_on_legal_hold(
    http: responses.RequestsMock, client: Any
) -> None:
    archive_user(http, "ana", 607, texts=2)
    export = exports.request("ana", "test", queue=False)
    exports.build(export["id"])
    hold = holds.place("ana", "case 2026-17", "legal team")
    answer = client.delete(f"/admin/exports/{export['id']}", headers=ADMIN, json={})
    assert answer.status_code == 409
    assert answer.get_json()["error"] == "on_legal_hold"
    assert f"on legal hold #{hold['id']} (case 2026-17" in answer.get_json()["detail"]
    found = exports.get(export["id"])
    assert found["status"] == "done" and _zip_of(found)
    assert found["events"][-1]["event"] == "refused"

    holds.lift("ana", hold["id"], "legal team")
    answer = client.delete(f"/admin/exports/{export['id']}", headers=ADMIN, json={})
    assert answer.status_code == 200 and answer.get_json()["status"] == "deleted"
    assert list(context.gcs().list_blobs(found["bucket_name"], prefix="exports/")) == []
    assert client.post(f"/admin/exports/{export['id']}/url", headers=ADMIN, json={}).status_code == 409


def test_expired_exports_are_deleted_by_the_cron_pass_except_on_hold(http: responses.RequestsMock) -> None:
    archive_user(http, "ana", 608, texts=1)
    archive_user(http, "bea", 609, texts=1)
    done = []
    for user in ("ana", "bea"):
        export = exports.request(user, "test", queue=False)
        exports.build(export["id"])
        done.append(export["id"])
    with context.db().transaction() as cur:
        cur.execute("UPDATE exports SET expires_at = now() - interval '1 minute'")
    holds.place("bea", "dispute", "legal team")
    assert exports.delete_expired() == {"deleted": 1, "kept_on_hold": 1}
    assert exports.get(done[0])["status"] == "deleted"
    assert exports.get(done[1])["status"] == "done"
    assert exports.delete_expired() == {"deleted": 0, "kept_on_hold": 1}


def test_a_failed_build_leaves_no_partial_zip_and_is_recorded(
    http: responses.RequestsMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive_user(http, "ana", 610, texts=3, voice_notes=1)
    export = exports.request("ana", "test", queue=False)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise OSError("connection reset while reading an attachment")

    monkeypatch.setattr(exports, "_copy", broken)
    with pytest.raises(OSError):
        exports.build(export["id"])
    found = exports.get(export["id"])
    assert found["status"] == "failed" and "connection reset" in found["error_details"]
    assert [e["event"] for e in found["events"]] == ["requested", "failed"]
    assert list(context.gcs().list_blobs(found["bucket_name"], prefix="exports/")) == []
    monkeypatch.undo()
    built = exports.build(export["id"])  # the retry starts over under a name of its own
    assert built.status == "done" and built.object_name == f"exports/{export['id']}/archive-2.zip"
