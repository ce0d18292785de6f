"""Authentic deliveries are never refused for their size: a 5 MB email newsletter is accepted,
archived whole and classified; the row keeps it without Chatwoot's copy of the message."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from app.archive import storage
from app.users import contacts
from tests.helpers.archive import ingest, note, read_json, run_archive, text_message
from tests.helpers.common import load_fixture, sign

URL = "/webhooks/chatwoot"


def newsletter(megabytes: float) -> dict[str, Any]:
    """The email fixture with an HTML part of `megabytes` (and its text part), as Chatwoot sends it:
    in content_attributes.email and again in conversation.messages[0]."""
    payload = copy.deepcopy(load_fixture("message_created__incoming_email"))
    html = (
        "<html><body>"
        + "<p>Onboarding in four days: what we changed, week by week.</p>"
        * int(megabytes * 1024 * 1024 / 120)
        + "</body></html>"
    )
    for holder in (payload, payload["conversation"]["messages"][0]):
        email = holder["content_attributes"]["email"]
        email["html_content"] = {"full": html, "reply": html, "quoted": ""}
    return payload


@pytest.mark.usefixtures("gcs")
def test_a_5_mb_email_is_accepted_archived_whole_and_classified(client: Any, db: Any, run_jobs: Any) -> None:
    payload = newsletter(2.6)
    body = json.dumps(payload).encode()
    assert len(body) > 5 * 1024 * 1024
    response = client.post(URL, data=body, headers=sign(body))
    assert response.status_code == 200, response.get_json()
    note_id = response.get_json()["id"]

    with db.transaction() as cur:
        cur.execute(
            "SELECT payload, archive_payload IS NOT NULL AS pending FROM meeting_notes WHERE id = %s",
            (note_id,),
        )
        row = cur.fetchone()
    assert "messages" not in row["payload"]["conversation"]  # the copy is not kept on the row
    assert row["payload"]["content_attributes"]["email"]["html_content"]["full"].startswith("<html>")
    assert row["pending"]

    run_jobs()
    with db.transaction() as cur:
        cur.execute(
            "SELECT processing_status, message_kind, gcs_storage_path, archive_payload FROM meeting_notes "
            "WHERE id = %s",
            (note_id,),
        )
        row = cur.fetchone()
    assert (row["processing_status"], row["message_kind"], row["archive_payload"]) == ("stored", "note", None)
    bucket, name = storage.parse_gs_uri(row["gcs_storage_path"])
    assert bucket == storage.bucket_name(contacts.fallback_key(1))
    archived = read_json(bucket, name)
    expected = copy.deepcopy(payload)
    del expected["conversation"]["contact_inbox"]["pubsub_token"]
    assert archived == expected  # what Chatwoot sent, secrets removed, the copy included


def test_a_body_over_max_webhook_bytes_is_refused(client: Any, db: Any, use_settings: Any) -> None:
    use_settings(max_webhook_bytes=1024 * 1024)
    body = json.dumps(newsletter(1.5)).encode()
    response = client.post(URL, data=body, headers=sign(body))
    assert response.status_code == 413
    assert "MAX_WEBHOOK_BYTES" in response.get_json()["detail"]
    with db.transaction() as cur:
        cur.execute("SELECT count(*) AS n FROM meeting_notes")
        assert cur.fetchone()["n"] == 0


def test_a_large_body_that_fails_authentication_is_dropped_unparsed(client: Any, db: Any) -> None:
    body = json.dumps(newsletter(3)).encode()
    response = client.post(URL, data=body, headers=sign(body, secret="not-the-secret"))
    assert response.status_code == 401
    with db.transaction() as cur:
        cur.execute("SELECT count(*) AS n FROM meeting_notes")
        assert cur.fetchone()["n"] == 0


class _Dripping:
    """A request body that arrives a byte at a time, slowly (a slow or malicious client)."""

    def __init__(self, body: bytes, pause: float):
        self.body = body
        self.pause = pause

    def read(self, size: int = -1) -> bytes:
        import time

        time.sleep(self.pause)
        piece, self.body = self.body[:1], self.body[1:]
        return piece

    def tell(self) -> int:
        return 0

    def seek(self, *args: Any) -> int:
        return 0


def test_a_body_that_drips_in_is_cut_off_at_the_deadline(app: Any, db: Any, use_settings: Any) -> None:
    import time

    from werkzeug.test import EnvironBuilder, run_wsgi_app

    use_settings(webhook_body_timeout=1)
    body = json.dumps(load_fixture("message_created__incoming_text")).encode()
    environ = EnvironBuilder(path=URL, method="POST", headers=sign(body), data=body).get_environ()
    environ["wsgi.input"] = _Dripping(body, 0.2)
    started = time.monotonic()
    _, status, _ = run_wsgi_app(app.wsgi_app, environ, buffered=True)
    assert status.startswith("408")
    assert time.monotonic() - started < 3
    with db.transaction() as cur:
        cur.execute("SELECT count(*) AS n FROM meeting_notes")
        assert cur.fetchone()["n"] == 0


@pytest.mark.usefixtures("gcs")
def test_an_email_archived_in_a_batch_with_other_messages_is_archived_whole(
    client: Any, db: Any, run_jobs: Any
) -> None:
    """The batch's loading of its messages is the single message's: the archived JSON is what
    Chatwoot sent, never the row's trimmed copy."""
    others = [ingest(text_message(8100))]  # the leading job's; the email is among those it claims
    payload = newsletter(0.5)
    body = json.dumps(payload).encode()
    assert client.post(URL, data=body, headers=sign(body)).status_code == 200
    others += [ingest(text_message(8101 + i)) for i in range(2)]
    assert run_archive(run_jobs) == 1  # one job archived the four
    with db.transaction() as cur:
        cur.execute(
            "SELECT gcs_storage_path FROM meeting_notes WHERE chatwoot_message_id = %s",
            (str(payload["id"]),),
        )
        path = cur.fetchone()["gcs_storage_path"]
    archived = read_json(*storage.parse_gs_uri(path))
    assert archived["conversation"]["messages"][0]["content_attributes"]["email"]["html_content"]["full"]
    assert all(note(i)["processing_status"] == "stored" for i in others)
