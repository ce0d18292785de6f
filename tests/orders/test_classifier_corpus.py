"""The classifier on its labelled corpus (tests/corpus/classifier), as `make eval-classify` runs it.

The rules alone must meet the targets on the test split; the model path runs against a local
OpenAI-compatible stub.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from typing import Any

import pytest

from app.config import Settings
from bench import eval_classify as ev
from tests.helpers.common import ROOT
from tests.helpers.orders import ChatModelStub

RULES_ONLY = Settings()


def test_the_corpus_is_as_described() -> None:
    splits = {name: ev.load(name) for name in ev.SPLITS}
    corpus = splits["train"] + splits["test"]
    assert len(corpus) >= 300
    assert len(splits["test"]) * 4 == len(corpus)  # a quarter set aside
    for lang in ev.LANGUAGES:
        assert sum(r["lang"] == lang for r in corpus) == len(corpus) // 3
    ids = [r["id"] for records in splits.values() for r in records]
    assert len(ids) == len(set(ids))
    cases = {r["case"] for r in corpus}
    assert {"question", "turn_into", "no_platform", "note_platform", "past_post", "wish", "thanks"} <= cases
    assert {"one_word", "command", "voice", "misspelled", "emoji", "mixed"} <= cases
    for record in (r for records in splits.values() for r in records):
        assert record["kind"] in ev.GOLD_KINDS
        for name, value in (record.get("fields") or {}).items():
            assert value in ev.rules.CHOICES[name], record["id"]


def test_the_rules_meet_the_targets_on_the_test_split() -> None:
    report = ev.evaluate(ev.load("test"), RULES_ONLY, "test", "rules alone")
    assert report.meets_targets() == [], ev.format_report(report)
    assert (report.overall.recall or 0) >= 0.95 and (report.overall.precision or 0) >= 0.97


def test_stated_fields_are_read_on_the_test_split() -> None:
    report = ev.evaluate(ev.load("test"), RULES_ONLY, "test", "rules alone")
    for name, scores in report.fields.items():
        assert scores.stated_right / scores.stated >= 0.9, name
        assert scores.right / scores.total >= 0.95, name
    assert report.complete_as_stated / report.overall.orders >= 0.95


def test_the_held_out_split_is_the_set_not_tuned_on() -> None:
    assert ev.FILES["heldout"] == "heldout-7"
    assert "heldout" not in ev.TUNING and {
        "heldout-3",
        "heldout-4",
        "heldout-5",
        "heldout-6",
        "train-2",
    } <= set(ev.TUNING)
    assert {r["id"][:3] for r in ev.load("heldout")} == {"h7-"}
    assert {r["id"][:3] for r in ev.load("heldout-6")} == {"h6-"}
    assert {r["id"][:3] for r in ev.load("heldout-5")} == {"h5-"}
    assert {r["id"][:3] for r in ev.load("heldout-3")} == {"h3-"}
    assert {r["id"][:3] for r in ev.load("heldout-4")} == {"h4-"}


@pytest.mark.xfail(
    strict=True,
    reason="measured once on each of seven held-out sets (order recall 0.889, 0.889, 0.796, 0.778, and on "
    "the three written blind 0.889, 0.889 and 0.811, against 0.974-1.000 on the test split; the seventh, "
    "heldout-7: precision 0.986, recall 0.811, by language en 0.767, pt 0.833, es 0.833, against 1.000 "
    "everywhere on the test split): the rules do not yet generalise within 0.05",
)
def test_the_held_out_set_scores_within_005_of_the_test_split() -> None:
    test = ev.evaluate(ev.load("test"), RULES_ONLY, "test", "rules alone")
    held = ev.evaluate(ev.load("heldout"), RULES_ONLY, "heldout", "rules alone")
    pairs = [(held.overall, test.overall)] + [
        (held.languages[lang], test.languages[lang]) for lang in ev.LANGUAGES
    ]
    for held_scores, test_scores in pairs:
        for metric in ("precision", "recall"):
            assert abs((getattr(held_scores, metric) or 0) - (getattr(test_scores, metric) or 0)) <= 0.05


def test_the_model_path_asks_the_chat_model_about_every_message_but_commands() -> None:
    stub = ChatModelStub()
    stub.default = (200, json.dumps(ev.STUB_READING))
    try:
        configured = ev.model_settings(stub.base_url)
        assert configured is not None
        settings, mode = configured
        records = ev.load("test")
        with_model = ev.evaluate(records, settings, "test", mode)
    finally:
        stub.close()
    assert len(stub.requests) == sum(r["kind"] != "command" for r in records)
    assert {r["body"]["model"] for r in stub.requests} == {"stub"}
    # A model that reads everything as a note never loses an order the rules found.
    rules_alone = ev.evaluate(records, RULES_ONLY, "test", "rules alone")
    assert with_model.overall.tp == rules_alone.overall.tp
    assert "confusion" in ev.format_report(with_model)


def test_the_report_lists_figures_confusion_fields_and_every_miss() -> None:
    out = io.StringIO()
    [report] = ev.run("test", stub=False, out=out)
    text = out.getvalue()
    for heading in (
        "== test split, rules alone ==",
        "confusion",
        "fields, on the",
        "misses (",
        "targets: met",
    ):
        assert heading in text
    for miss in report.misses:
        assert miss["id"] in text
    assert "held-out vs test" in text


def test_make_eval_classify_runs_the_script_with_the_model_stub(tmp_path: Any) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "eval_classify.py"), "--model-stub", "--check"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "== test split, rules alone ==" in done.stdout
    assert "rules + local model stub at http://127.0.0.1:" in done.stdout
