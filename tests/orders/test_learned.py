"""The learned reading of notes and orders (app/orders/learned.py) and how it joins the rules."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from typing import Any

import pytest

from app.config import Settings
from app.orders import learned, rules
from bench import eval_classify as ev
from bench import train_classifier
from tests.helpers.orders import (
    ChatwootAPI,
    add_note,
    chatwoot_api_fixture,  # noqa: F401 (the chatwoot_api fixture)
    message,
    note,
    orders,
)

WITH_LEARNED = Settings()
RULES_ALONE = Settings(learned_classifier=False)


def test_the_committed_model_is_what_training_on_the_tuning_splits_gives() -> None:
    committed = json.loads(learned.MODEL_PATH.read_text(encoding="utf-8"))
    trained = train_classifier.train()
    assert train_classifier.differences(committed, trained) == []
    assert committed["trained_on"] == list(ev.TUNING)
    # Neither the test split nor any file of the held-out set is trained on.
    held_out_files = {"test", *ev.FILES["heldout"]}
    trained_files = {name for split in ev.TUNING for name in ev.FILES.get(split, (split,))}
    assert held_out_files and not held_out_files & trained_files


def test_the_plain_python_reading_gives_scikit_learns_probabilities() -> None:
    vectorizer, classifier, _ = train_classifier.fit()
    texts = [r["text"] for r in ev.load("test")]
    expected = classifier.predict_proba(vectorizer.transform(texts))[:, 1]
    model = learned.parse(train_classifier.train())
    for text, want in zip(texts, expected, strict=True):
        assert model.probability(text) == pytest.approx(want, abs=1e-4), text


@pytest.mark.parametrize(
    ("content", "error"),
    [
        ([], "not a JSON object"),
        ({"features": {"w:post": [1.0, 2.0]}}, "'intercept' is not a number"),
        ({"intercept": True, "features": {"w:post": [1.0, 2.0]}}, "'intercept' is not a number"),
        ({"intercept": 0.1, "features": {}}, "'features' is not a non-empty object"),
        ({"intercept": 0.1, "features": {"w:post": [1.0]}}, "feature 'w:post'"),
        ({"intercept": 0.1, "features": {"w:post": [1.0, "x"]}}, "feature 'w:post'"),
        ({"intercept": 0.1, "features": {"w:post": [1.0, float("nan")]}}, "feature 'w:post'"),
    ],
)
def test_a_damaged_model_file_is_refused_with_what_is_wrong(content: object, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        learned.parse(content)


def test_features_read_letters_words_and_the_kinds_of_word_the_rules_know() -> None:
    found = learned.features("Could you write me a post, pls?")
    assert " wr" in found and "rite " in found  # letters, within a word
    assert "w:write" in found and "b:write me" in found  # words and pairs of words
    assert {"c:sverb", "c:noun", "c:please", "m:req"} <= set(found)  # kinds, and phrases ("could you")
    # Misspelled, the letters still match ("escrivime" shares "escri" with "escribe").
    assert "escri" in learned.features("escrivime un tuit")


@pytest.fixture
def reading(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """Make the learned reading say a given probability for every message (a model of no feature
    but its intercept); `reading[1]`, when set, is said of any text holding "tips"."""
    said = [0.5, -1.0]

    def logit(p: float) -> float:
        return math.log(p / (1 - p))

    def fixed() -> learned.Model:
        if said[1] < 0:
            return learned.Model(logit(said[0]), {})
        # One feature: the word "tips" moves the probability from said[0] to said[1] (idf 1, alone).
        return learned.Model(logit(said[0]), {"w:tips": (1.0, logit(said[1]) - logit(said[0]))})

    monkeypatch.setattr(learned, "model", fixed)
    yield said


NO_REQUEST = "the drone survey went well, 40 hectares in two hours"


def test_a_message_with_no_request_is_an_order_when_the_learned_reading_is_sure(reading: list[float]) -> None:
    assert rules.read(NO_REQUEST) == ("note", rules.NO_REQUEST)
    reading[0] = 0.9
    found = rules.classify_text(NO_REQUEST, WITH_LEARNED)
    assert (found.kind, found.via, found.unsure) == ("order", "learned", False)
    assert found.reason == "learned reading 0.90"


def test_below_the_order_line_the_service_asks_and_lower_it_files_a_note(reading: list[float]) -> None:
    for chance, expected in (
        (learned.ORDER_AT + 1e-6, ("order", False, "learned")),
        (learned.ORDER_AT - 1e-6, ("note", True, "learned")),
        (learned.ASK_AT + 1e-6, ("note", True, "learned")),
        (learned.ASK_AT - 1e-6, ("note", False, "rules")),
    ):
        reading[0] = chance
        found = rules.classify_text(NO_REQUEST, WITH_LEARNED)
        assert (found.kind, found.unsure, found.via) == expected, chance


def test_what_the_rules_decided_on_purpose_stays_theirs(reading: list[float]) -> None:
    reading[0] = 0.99
    # A wish, the writer's own plan, a note's heading, reported speech: the rules stopped on a reason.
    for text, reason in (
        ("note to self: write a post about burnout someday", "imperative, but a wish"),
        ("someday I should write a post about burnout", "a wish"),
        ("eventually a linkedin post about the award", "a wish"),
        ("I'll write the blog post about the launch myself tomorrow", "the writer's own plan"),
        ("we should tweet about the closure", "the writer's own plan"),
        ("todo: linkedin post about the award", "a note's heading"),
        ("the client asked: can you write a post about the launch?", "request, but reported"),
    ):
        assert rules.read(text)[1] == reason
        with_learned = rules.classify_text(text, WITH_LEARNED)
        alone = rules.classify_text(text, RULES_ALONE)
        assert (with_learned.kind, with_learned.unsure, with_learned.via) == (
            alone.kind,
            alone.unsure,
            "rules",
        )
    reading[0] = 0.01
    # And an order the rules found is not taken back.
    found = rules.classify_text("write a LinkedIn post about our new office", WITH_LEARNED)
    assert (found.kind, found.via) == ("order", "rules")


def test_someone_elses_words_are_asked_about_however_sure_the_reading(reading: list[float]) -> None:
    """As the rules read them: the request is in the quotation, or after "wants", "said"… only."""
    reading[:] = [0.1, 0.95]  # a request wherever "tips" is
    for text, whose in (
        ('the client said "whip up 3 tips about winter tyres"', "quoted"),
        ("Ana wants 3 tips about winter tyres", "reported"),
    ):
        assert rules.read(text)[1] == rules.NO_REQUEST
        found = rules.classify_text(text, WITH_LEARNED)
        assert (found.kind, found.unsure, found.reason) == (
            "note",
            True,
            f"learned reading 0.95, but {whose}",
        )
    # A quotation that is not where the request is (a title), or words reported after the request.
    for text in (
        'whip up 3 tips about winter tyres titled "ready for snow"',
        "3 tips about winter tyres pls, he says they're selling well",
    ):
        found = rules.classify_text(text, WITH_LEARNED)
        assert (found.kind, found.reason) == ("order", "learned reading 0.95"), text


def test_learned_classifier_off_leaves_the_rules_alone(reading: list[float]) -> None:
    reading[0] = 0.99
    found = rules.classify_text(NO_REQUEST, RULES_ALONE)
    assert (found.kind, found.unsure, found.reason) == ("note", False, rules.NO_REQUEST)


def test_the_trained_model_reads_requests_in_words_no_rule_knows() -> None:
    """Messages of no corpus file: the rules find no request in them; the trained reading does."""
    for text in (
        "pls whip up 3 tips abt storing winter tyres",
        "me arma uns 3 stories sobre a promoção?",
        "hazme 2 textitos pa insta sobre la oferta de neumaticos",
    ):
        assert rules.read(text)[1] == rules.NO_REQUEST, text
        assert rules.classify_text(text, WITH_LEARNED).kind == "order", text
    for text in ("the tyre promo post did really well on instagram", "obrigado!"):
        found = rules.classify_text(text, WITH_LEARNED)
        assert (found.kind, found.unsure) == ("note", False), text


def test_through_the_classify_job_a_request_only_the_learned_reading_knows_becomes_an_order(
    db: Any, run_jobs: Any, chatwoot_api: ChatwootAPI, caplog: pytest.LogCaptureFixture
) -> None:
    text = "hazme 2 textitos pa insta sobre la oferta de neumaticos"
    assert rules.read(text)[1] == rules.NO_REQUEST
    asked = add_note(db, message(content=text))
    with caplog.at_level(logging.INFO, logger="app.orders.classify"):
        run_jobs()
    # The log says what decided, for the operator who looks into a misreading; not the words.
    [read] = [r for r in caplog.records if r.getMessage() == "message read"]
    assert (read.note_id, read.read_as, read.via, read.ask) == (asked, "order", "learned", False)  # type: ignore[attr-defined]
    assert read.reason.startswith("learned reading 0.")  # type: ignore[attr-defined]
    assert all("neumaticos" not in str(vars(r)) for r in caplog.records)
    assert note(db, asked)["message_kind"] == "order"
    [order] = orders(db)
    assert (order["source_meeting_note_id"], order["platform"]) == (asked, "Instagram")
    # Then its own questions, as for any order, never for the platform it named.
    [question] = chatwoot_api.posted
    key = question["content_attributes"]["outbox_key"]
    assert key.startswith(f"order:{order['id']}:ask:") and ":platform:" not in key


def test_through_the_classify_job_an_uncertain_learned_reading_asks_once(
    db: Any, run_jobs: Any, chatwoot_api: ChatwootAPI, reading: list[float]
) -> None:
    reading[0] = (learned.ASK_AT + learned.ORDER_AT) / 2
    asked = add_note(db, message(content=NO_REQUEST))
    run_jobs()
    assert [b["content_attributes"]["outbox_key"] for b in chatwoot_api.posted] == ["note:1:confirm"]
    assert note(db, asked)["message_kind"] is None  # undecided until answered
    assert orders(db) == []
