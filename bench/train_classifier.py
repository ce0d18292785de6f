"""Train the learned note/order reading (app/orders/learned.py) on the corpus's tuning splits.

    .venv/bin/python bench/train_classifier.py [--out PATH] [--check] [--cross-validate]

Fits a logistic regression (scikit-learn) over the features `learned.features` gives, on every
message of the tuning splits of tests/corpus/classifier (bench/eval_classify.py, TUNING) that is an
order or a note, and writes its terms to app/orders/learned_model.json. The test split and the
held-out set are never read. The fit runs to the optimum (a tight tolerance), so the same corpus and
features give the same file on any machine, which a test checks (--check here: exit 1 when the
committed file is not what training gives).

--cross-validate: how C, ORDER_AT and ASK_AT were chosen. Each blind-written tuning set in turn is
left out of training and read with the rules then the model trained on the rest (as the service
reads, `learned.second_reading`), for several values of each; figures for the sets written as users
write and for the sets of hard cases. The rules were tuned on these sets too, so the figures favour
them: held-out sets tell more.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.orders import learned  # noqa: E402
from bench import eval_classify  # noqa: E402

C = 4.0
"""Inverse regularisation strength, chosen by leaving each blind-written tuning set out in turn."""
MIN_DF = 2
"""A feature seen in a single message is not kept."""
FIT_TOLERANCE = 1e-8
"""The optimiser stops this close to the optimum, which is unique: not where one version of SciPy
happens to stop."""
MAX_ITER = 100_000
DIGITS = 6
TOLERANCE = 1e-4
"""How far a retrained term may drift from the committed one (floating point across machines)."""
AS_USERS_WRITE = (
    "train-3",
    "train-4",
    "train-5",
    "train-6",
    "heldout-8",
    "heldout-9",
    "heldout-10",
    "heldout-11",
)
HARD_CASES = ("train-7", "train-8", "train-9", "train-10")
"""The blind-written tuning sets the cross-validation leaves out in turn."""
LINES = (0.5, 0.55, 0.6, 0.65, 0.7)
ASK_LINES = (0.4, 0.45, 0.5)
C_CHOICES = (2.0, 4.0, 8.0)


def examples(splits: tuple[str, ...] = eval_classify.TUNING) -> tuple[list[str], list[int]]:
    texts: list[str] = []
    labels: list[int] = []
    for split in splits:
        for record in eval_classify.load(split):
            if record["kind"] in ("order", "note"):
                texts.append(record["text"])
                labels.append(int(record["kind"] == "order"))
    return texts, labels


def fit(splits: tuple[str, ...] = eval_classify.TUNING, c: float = C) -> tuple[Any, Any, dict[str, Any]]:
    """(the fitted TfidfVectorizer, the fitted LogisticRegression, what they were fitted on)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    texts, labels = examples(splits)
    vectorizer = TfidfVectorizer(analyzer=learned.features, sublinear_tf=True, min_df=MIN_DF)
    matrix = vectorizer.fit_transform(texts)
    classifier = LogisticRegression(C=c, class_weight="balanced", tol=FIT_TOLERANCE, max_iter=MAX_ITER).fit(
        matrix, labels
    )
    if classifier.n_iter_[0] >= MAX_ITER:
        raise RuntimeError("the fit did not reach its optimum")
    return vectorizer, classifier, {"trained_on": list(splits), "messages": len(texts), "orders": sum(labels)}


def _fold_reading(splits: tuple[str, ...], c: float, texts: list[str]) -> Callable[[str], float]:
    """The probability a model trained on `splits` gives a text (the fold's texts scored at once)."""
    vectorizer, classifier, _ = fit(splits, c)
    chances = classifier.predict_proba(vectorizer.transform(texts))[:, 1]
    known = {text: float(chance) for text, chance in zip(texts, chances, strict=True)}

    def reading(text: str) -> float:
        if text not in known:  # a part of a message (someone else's words are looked for)
            known[text] = float(classifier.predict_proba(vectorizer.transform([text]))[0, 1])
        return known[text]

    return reading


def _scores(c: float) -> dict[tuple[str, float, float], list[int]]:
    """(group, ORDER_AT, ASK_AT) -> [tp, fp, fn, notes asked, orders asked, orders dropped]."""
    from app.orders import rules

    lines = [(2.0, 2.0), *((o, a) for o in LINES for a in ASK_LINES if a < o)]  # 2.0: the rules alone
    found: dict[tuple[str, float, float], list[int]] = {}
    for group, name in ((AS_USERS_WRITE, "as users write"), (HARD_CASES, "hard cases")):
        for held in group:
            records = [r for r in eval_classify.load(held) if r["kind"] in ("order", "note")]
            rest = tuple(s for s in eval_classify.TUNING if s != held)
            reading = _fold_reading(rest, c, [r["text"] for r in records])
            for record in records:
                gold = record["kind"] == "order"
                read_as, reason = rules.read(record["text"])
                for order_at, ask_at in lines:
                    kind = learned.second_reading(
                        record["text"], read_as, reason, reading=reading, order_at=order_at, ask_at=ask_at
                    )[0]
                    tally = found.setdefault((name, order_at, ask_at), [0] * 6)
                    tally[0] += gold and kind == "order"
                    tally[1] += not gold and kind == "order"
                    tally[2] += gold and kind != "order"
                    tally[3] += not gold and kind == "unsure"
                    tally[4] += gold and kind == "unsure"
                    tally[5] += gold and kind == "note"
    return found


def cross_validate(out: Any = sys.stdout) -> None:
    """Each blind tuning set read by the rules then a model trained without it: for each C, then for
    each pair of lines, precision, recall, notes and orders asked about, and orders dropped."""

    def row(label: str, t: list[int]) -> str:
        tp, fp, fn, asked_notes, asked_orders, dropped = t
        return (
            f"{label:<44} {tp / (tp + fp):>9.3f} {tp / (tp + fn):>7.3f}"
            f" {asked_notes:>12} {asked_orders:>13} {dropped:>8}"
        )

    header = (
        f"{'':<44} {'precision':>9} {'recall':>7} {'notes asked':>12} {'orders asked':>13} {'dropped':>8}"
    )
    by_c = {c: _scores(c) for c in C_CHOICES}
    print(f"C, with ORDER_AT {learned.ORDER_AT} and ASK_AT {learned.ASK_AT}", file=out)
    print(header, file=out)
    for c, found in by_c.items():
        for name in ("as users write", "hard cases"):
            print(row(f"C {c:g}, {name}", found[(name, learned.ORDER_AT, learned.ASK_AT)]), file=out)
    print(f"\nthe lines, with C {C:g}", file=out)
    print(header, file=out)
    for (name, order_at, ask_at), tally in by_c[C].items():
        label = "rules alone" if order_at > 1 else f"order at {order_at:.2f}, ask at {ask_at:.2f}"
        print(row(f"{label}, {name}", tally), file=out)


def train() -> dict[str, Any]:
    """The model file's content."""
    vectorizer, classifier, meta = fit()
    weights = classifier.coef_[0]
    return {
        **meta,
        "C": C,
        "min_df": MIN_DF,
        "intercept": round(float(classifier.intercept_[0]), DIGITS),
        "features": {
            feature: [round(float(vectorizer.idf_[i]), DIGITS), round(float(weights[i]), DIGITS)]
            for feature, i in sorted(vectorizer.vocabulary_.items())
        },
    }


def differences(committed: dict[str, Any], trained: dict[str, Any]) -> list[str]:
    """What differs between two model files, beyond floating-point noise."""
    found = [
        key
        for key in ("trained_on", "messages", "orders", "C", "min_df")
        if committed.get(key) != trained.get(key)
    ]
    if abs(committed["intercept"] - trained["intercept"]) > TOLERANCE:
        found.append("intercept")
    if committed["features"].keys() != trained["features"].keys():
        found.append(f"features ({len(committed['features'])} committed, {len(trained['features'])} trained)")
        return found
    drifted = [
        f
        for f, terms in trained["features"].items()
        if any(abs(a - b) > TOLERANCE for a, b in zip(terms, committed["features"][f], strict=True))
    ]
    if drifted:
        found.append(f"{len(drifted)} feature terms, e.g. {drifted[:3]}")
    return found


def write(data: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=learned.MODEL_PATH)
    parser.add_argument("--check", action="store_true", help="compare with the committed file; write nothing")
    parser.add_argument(
        "--cross-validate", action="store_true", help="leave each blind tuning set out in turn"
    )
    args = parser.parse_args(argv)
    if args.cross_validate:
        cross_validate()
        return 0
    trained = train()
    if args.check:
        committed = json.loads(learned.MODEL_PATH.read_text(encoding="utf-8"))
        found = differences(committed, trained)
        print("the committed model is what training gives" if not found else "differs: " + "; ".join(found))
        return 1 if found else 0
    write(trained, args.out)
    print(
        f"{args.out}: {len(trained['features'])} features, {trained['messages']} messages of {', '.join(trained['trained_on'])}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
