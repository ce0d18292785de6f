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

from bench import eval_classify as ev
from tests.helpers.common import ROOT
from tests.helpers.orders import ChatModelStub

RULES_ONLY = ev.RULES_ALONE


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
    assert ev.FILES["heldout"] == ("heldout-14", "heldout-15")
    assert "heldout" not in ev.TUNING and "test" not in ev.TUNING
    tuning_files = {name for split in ev.TUNING for name in ev.FILES.get(split, (split,))}
    assert not {"test", *ev.FILES["heldout"]} & tuning_files  # by file, not by split name
    assert {
        "train-2",
        "train-3",
        "train-6",
        "heldout-3",
        "heldout-4",
        "heldout-5",
        "heldout-6",
        "heldout-7",
    } <= set(ev.TUNING)
    assert {r["id"][:4] for r in ev.load("heldout")} == {"h14-", "h15-"}
    for n in range(3, 14):
        assert all(r["id"].startswith(f"h{n}-") for r in ev.load(f"heldout-{n}")), n


def _gaps(by_language: bool) -> dict[str, float]:
    """How far the held-out set scores from the test split, with what the service runs without a
    chat model (the rules, then the learned reading)."""
    test = ev.evaluate(ev.load("test"), ev.WITH_LEARNED, "test", "rules + learned reading")
    held = ev.evaluate(ev.load("heldout"), ev.WITH_LEARNED, "heldout", "rules + learned reading")
    pairs = {"all": (held.overall, test.overall)}
    if by_language:
        pairs = {lang: (held.languages[lang], test.languages[lang]) for lang in ev.LANGUAGES}
    return {
        f"{name} {metric}": abs((getattr(h, metric) or 0) - (getattr(t, metric) or 0))
        for name, (h, t) in pairs.items()
        for metric in ("precision", "recall")
    }


def test_the_held_out_set_scores_within_005_of_the_test_split() -> None:
    gaps = _gaps(by_language=False)
    assert ev.within_margin(max(gaps.values())), gaps


def test_the_held_out_set_scores_within_005_of_the_test_split_in_each_language() -> None:
    gaps = _gaps(by_language=True)
    assert ev.within_margin(max(gaps.values())), gaps


def test_a_gap_of_exactly_the_margin_is_within_it() -> None:
    assert ev.within_margin(abs(57 / 60 - 1.0)) and ev.within_margin(0.0)
    assert not ev.within_margin(abs(56 / 60 - 1.0))


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
    alone, learned = ev.run("test", stub=False, out=out)
    text = out.getvalue()
    assert (alone.mode, learned.mode) == ("rules alone", "rules + learned reading")
    for heading in (
        "== test split, rules alone ==",
        "== test split, rules + learned reading ==",
        "confusion",
        "fields, on the",
        "misses (",
        "targets: met",
    ):
        assert heading in text
    for miss in alone.misses + learned.misses:
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
    assert "== test split, rules + learned reading ==" in done.stdout
    assert "rules + local model stub at http://127.0.0.1:" in done.stdout
