"""Fuzzing the webhook with hypothesis: thousands of generated payloads and headers.

Whatever arrives, the webhook answers with one of its documented statuses (never a 5xx: the
test's PostgreSQL is up), never crashes, and stores nothing from a request that is not signed.
"""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers.common import WEBHOOK_SECRET, fixture_names, load_fixture, sign

pytestmark = pytest.mark.slow

PATH = "/webhooks/chatwoot"
SIGNED_STATUSES = {200, 400, 413, 415, 422}
"""What a correctly signed delivery may get; 401 never, 5xx never."""
UNSIGNED_STATUSES = {400, 401, 413, 415}
FUZZ = settings(
    max_examples=700,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)

# --- values ------------------------------------------------------------------------------------

_text = st.text(max_size=40)
_weird_text = st.text(
    alphabet=st.characters(codec="utf-8")
    | st.sampled_from(["\x00", "\ud800", "\u202e", "'", '"', "\\", "%"]),
    max_size=40,
)
_ints = st.integers(min_value=-(2**70), max_value=2**70) | st.sampled_from(
    [0, 1, -1, 2**31 - 1, 2**31, 2**63]
)
_leaf = (
    st.none() | st.booleans() | _ints | st.floats(allow_nan=False, allow_infinity=False) | _text | _weird_text
)
json_values = st.recursive(
    _leaf,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_text, children, max_size=4),
    max_leaves=8,
)

EVENTS = [
    "message_created",
    "message_updated",
    "conversation_created",
    "conversation_status_changed",
    "conversation_typing_on",
    "contact_updated",
    "webwidget_triggered",
]
FIXTURES = fixture_names()


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path of a JSON value (dict keys and list indexes)."""
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, child in value.items():
            out += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            out += _paths(child, (*prefix, index))
    return out


def _set(doc: Any, path: tuple[Any, ...], new: Any, delete: bool) -> None:
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = new


@st.composite
def mutated_fixtures(draw: st.DrawFn) -> dict[str, Any]:
    """A real Chatwoot payload with a few values replaced by anything or removed."""
    doc = copy.deepcopy(load_fixture(draw(st.sampled_from(FIXTURES))))
    doc["id"] = draw(st.integers(min_value=1, max_value=2**40) | _ints | _text)
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        paths = _paths(doc)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        _set(doc, path, draw(json_values), delete=draw(st.booleans()) and isinstance(path[-1], str))
    return doc


@st.composite
def message_like(draw: st.DrawFn) -> dict[str, Any]:
    """A payload with Chatwoot's keys, each holding a plausible value or anything at all."""

    def either(plausible: st.SearchStrategy[Any]) -> Any:
        return draw(plausible | json_values)

    doc = {
        "event": either(st.sampled_from(EVENTS)),
        "id": either(st.integers(min_value=1, max_value=2**40)),
        "content": either(_weird_text),
        "content_type": either(st.sampled_from(["text", "input_select", "cards", "form"])),
        "content_attributes": either(st.dictionaries(_text, json_values, max_size=3)),
        "message_type": either(st.sampled_from(["incoming", "outgoing", "template", "activity", 0, 1, 2, 3])),
        "private": either(st.booleans()),
        "created_at": either(
            st.sampled_from(["2026-01-01T10:00:00.000Z", "2026-13-45T99:99:99Z", "yesterday", ""]) | _ints
        ),
        "sender": either(
            st.fixed_dictionaries({"id": _ints, "type": st.sampled_from(["contact", "user", "x"])})
        ),
        "conversation": either(
            st.fixed_dictionaries(
                {
                    "id": _ints,
                    "channel": _text,
                    "meta": st.just({"sender": {"id": 5, "phone_number": "+1555"}}),
                }
            )
        ),
        "account": either(st.fixed_dictionaries({"id": _ints})),
        "inbox": either(st.fixed_dictionaries({"id": _ints})),
        "attachments": either(
            st.lists(
                st.fixed_dictionaries(
                    {"id": _ints, "file_type": _text, "data_url": _text, "transcribed_text": _weird_text}
                ),
                max_size=3,
            )
        ),
    }
    for key in draw(st.lists(st.sampled_from(sorted(doc)), max_size=3, unique=True)):
        del doc[key]
    return doc


def _check_signed(client: Any, db: Any, body: bytes) -> None:
    response = client.post(PATH, data=body, headers=sign(body))
    assert response.status_code in SIGNED_STATUSES, (response.status_code, response.get_data()[:300])
    answer = response.get_json()
    assert isinstance(answer, dict)
    if response.status_code == 200:
        assert answer["status"] in ("accepted", "duplicate", "ignored"), answer
        if answer["status"] in ("accepted", "duplicate"):
            assert _note_exists(db, answer), answer
    else:
        assert set(answer) == {"error", "detail"}, answer
        assert "Traceback" not in response.get_data(as_text=True)


def _note_exists(db: Any, answer: dict[str, Any]) -> bool:
    with db.transaction() as cur:
        cur.execute("SELECT 1 FROM meeting_notes WHERE id = %s", (answer["id"],))
        return cur.fetchone() is not None


# --- signed deliveries: never a 5xx --------------------------------------------------------------


@FUZZ
@given(doc=mutated_fixtures())
def test_mutated_chatwoot_payloads(client: Any, db: Any, doc: dict[str, Any]) -> None:
    _check_signed(client, db, json.dumps(doc).encode())


@settings(FUZZ, max_examples=500)
@given(doc=message_like())
def test_message_shaped_payloads(client: Any, db: Any, doc: dict[str, Any]) -> None:
    _check_signed(client, db, json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogatepass"))


@settings(FUZZ, max_examples=500)
@given(doc=json_values)
def test_any_json(client: Any, db: Any, doc: Any) -> None:
    _check_signed(client, db, json.dumps(doc).encode())


@settings(FUZZ, max_examples=300)
@given(
    body=st.binary(max_size=300)
    | st.sampled_from([b"", b"{", b"[]", b"NaN", b'{"a": Infinity}', b"\xff\xfe"])
)
def test_any_bytes(client: Any, db: Any, body: bytes) -> None:
    _check_signed(client, db, body)


def test_deep_nesting_and_large_numbers(client: Any, db: Any) -> None:
    for body in (
        b"[" * 100_000 + b"]" * 100_000,
        b'{"event": "message_created", "id": ' + b"9" * 5000 + b"}",
        json.dumps({**load_fixture("message_created__incoming_text"), "id": 10**30}).encode(),
        json.dumps({**load_fixture("message_created__incoming_text"), "content": "x" * 900_000}).encode(),
    ):
        _check_signed(client, db, body)


# --- unsigned or wrongly signed: never stored ----------------------------------------------------

_header_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=80)


@st.composite
def bad_headers(draw: st.DrawFn, body: bytes) -> dict[str, str]:
    """Headers of a delivery that does not carry a valid signature for `body`."""
    good = sign(body)
    now = int(time.time())
    kind = draw(
        st.sampled_from(
            ["none", "random", "wrong_secret", "stale", "future", "other_body", "mangled", "partial"]
        )
    )
    headers = {"Content-Type": draw(st.sampled_from(["application/json", "application/json; charset=utf-8"]))}
    if kind == "random":
        headers["X-Chatwoot-Signature"] = draw(_header_text)
        headers["X-Chatwoot-Timestamp"] = draw(_header_text | st.integers().map(str))
    elif kind == "wrong_secret":
        headers.update(sign(body, secret=draw(_header_text.filter(lambda s: s != WEBHOOK_SECRET))))
    elif kind == "stale":
        headers.update(sign(body, timestamp=now - draw(st.integers(min_value=301, max_value=10**9))))
    elif kind == "future":
        headers.update(sign(body, timestamp=now + draw(st.integers(min_value=301, max_value=10**9))))
    elif kind == "other_body":
        headers.update(sign(body + b" "))
    elif kind == "mangled":
        signature = good["X-Chatwoot-Signature"]
        index = draw(st.integers(min_value=7, max_value=len(signature) - 1))
        flipped = "0" if signature[index] != "0" else "1"
        headers.update({**good, "X-Chatwoot-Signature": signature[:index] + flipped + signature[index + 1 :]})
    elif kind == "partial":
        key = draw(st.sampled_from(["X-Chatwoot-Signature", "X-Chatwoot-Timestamp"]))
        headers[key] = good[key]
    headers["Content-Type"] = draw(st.sampled_from([headers["Content-Type"], "text/plain", ""]))
    return headers


@settings(FUZZ, max_examples=800)
@given(data=st.data())
def test_unsigned_requests_never_leave_a_row(client: Any, db: Any, data: st.DataObject) -> None:
    # The body matters little here (nothing is read before the signature); the headers do.
    doc = dict(load_fixture(data.draw(st.sampled_from(FIXTURES))))
    doc["id"] = data.draw(st.integers(min_value=1, max_value=2**40))
    doc["content"] = data.draw(_weird_text)
    body = json.dumps(doc).encode("utf-8", "surrogatepass")
    headers = data.draw(bad_headers(body))
    query = data.draw(
        st.sampled_from(["", "?token=", "?token=guess"]) | _header_text.map(lambda t: f"?token={t}")
    )
    response = client.post(PATH + query, data=body, headers=headers)
    assert response.status_code in UNSIGNED_STATUSES, (response.status_code, response.get_data()[:300])
    with db.transaction() as cur:
        cur.execute(
            "SELECT (SELECT count(*) FROM meeting_notes) + (SELECT count(*) FROM message_updates) AS n"
        )
        assert cur.fetchone()["n"] == 0


def test_nothing_spooled_from_unsigned_requests(client: Any, db: Any, settings: Any) -> None:
    from app.ingest import spool

    body = json.dumps(load_fixture("message_created__incoming_text")).encode()
    for headers in ({"Content-Type": "application/json"}, sign(body, secret="not-the-secret")):
        assert client.post(PATH, data=body, headers=headers).status_code == 401
    assert spool.status()["records"] == 0


# --- headers and ids in other scripts' digits, and surrogates -------------------------------------

_unicode_digits = st.text(alphabet="0123456789²³¹①②٣߃", min_size=1, max_size=12)
"""ASCII digits mixed with characters `str.isdigit()` also accepts and `int()` refuses."""


@settings(FUZZ, max_examples=300)
@given(timestamp=_unicode_digits, account=_unicode_digits | _ints, sender=_unicode_digits)
def test_unicode_digits_in_headers_and_ids(
    client: Any, db: Any, timestamp: str, account: Any, sender: str
) -> None:
    doc = copy.deepcopy(load_fixture("message_created__incoming_text"))
    doc["account"] = {"id": account}
    doc["conversation"]["meta"]["sender"]["id"] = sender
    body = json.dumps(doc, ensure_ascii=False).encode()
    forged = {
        "Content-Type": "application/json",
        "X-Chatwoot-Timestamp": timestamp.encode().decode("latin-1"),
        "X-Chatwoot-Signature": "sha256=" + "0" * 64,
    }
    response = client.post(PATH, data=body, headers=forged)
    assert response.status_code in UNSIGNED_STATUSES, response.get_data()[:300]
    # Signed, the same body never gets a 5xx either.
    signed = copy.deepcopy(doc)
    signed["account"] = {"id": 1}
    _check_signed(client, db, json.dumps(signed, ensure_ascii=False).encode())


@pytest.mark.parametrize(
    "body",
    [
        "\ufeff{}".encode("utf-16"),
        json.dumps(load_fixture("message_created__incoming_text")).encode("utf-16"),
        b'{"event": "message_created", "id": 5, "account": {"id": 1}, "content": "\xed\xa0\x80"}',
    ],
)
def test_other_encodings_and_raw_surrogates_when_signed(client: Any, db: Any, body: bytes) -> None:
    _check_signed(client, db, body)


# --- the admin API: bad text, bad ids, deep bodies: never a 5xx ---------------------------------

ADMIN = {"Authorization": "Bearer test-admin-token"}
ADMIN_CALLS = [
    ("POST", "/admin/users", "user_id"),
    ("PATCH", "/admin/users/u1", "display_name"),
    ("POST", "/admin/users/u1/links", "identifier"),
    ("PUT", "/admin/accounts/7", "name"),
    ("PUT", "/admin/accounts/7/inboxes/3/secret", "secret"),
]
_bad_text = st.text(
    alphabet=st.characters(codec="utf-8") | st.sampled_from(["\x00", "\ud800", "\udfff", "²", "①"]),
    min_size=1,
    max_size=30,
)


@settings(FUZZ, max_examples=300)
@given(call=st.sampled_from(ADMIN_CALLS), value=_bad_text, extra=json_values)
def test_admin_api_bodies(client: Any, db: Any, call: tuple[str, str, str], value: str, extra: Any) -> None:
    method, path, field = call
    body = json.dumps({field: value, "extra": extra}, ensure_ascii=False).encode("utf-8", "surrogatepass")
    response = client.open(
        path, method=method, data=body, headers={**ADMIN, "Content-Type": "application/json"}
    )
    assert response.status_code < 500, (response.status_code, response.get_data()[:300])
    assert set(response.get_json()) >= {"error"} or response.status_code < 300


@settings(FUZZ, max_examples=200)
@given(segment=_bad_text, after=_bad_text)
def test_admin_api_path_ids_and_queries(client: Any, db: Any, segment: str, after: str) -> None:
    quoted = segment.encode("utf-8", "surrogatepass").hex()
    raw_path = "/admin/users/" + "".join(f"%{quoted[i : i + 2]}" for i in range(0, len(quoted), 2))
    for method in ("GET", "PATCH", "DELETE"):
        response = client.open(raw_path, method=method, json={"display_name": "x"}, headers=ADMIN)
        assert response.status_code < 500, (method, response.status_code, response.get_data()[:300])
    response = client.get("/admin/users", query_string={"after": after}, headers=ADMIN)
    assert response.status_code < 500, (response.status_code, response.get_data()[:300])


def test_admin_api_deep_body(client: Any, db: Any) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    for method, path, _ in ADMIN_CALLS:
        response = client.open(
            path, method=method, data=deep, headers={**ADMIN, "Content-Type": "application/json"}
        )
        assert response.status_code == 400, (path, response.status_code)
