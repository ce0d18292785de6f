"""Train the learned note/order reading (app/orders/learned.py) on the corpus's tuning splits.

    .venv/bin/python bench/train_classifier.py [--out PATH] [--check]

Fits a logistic regression (scikit-learn) over the features `learned.features` gives, on every
message of the tuning splits of tests/corpus/classifier (bench/eval_classify.py, TUNING) that is an
order or a note, and writes its terms to app/orders/learned_model.json. The test split and the
held-out set are never read. The fit is deterministic: the same corpus and features give the same
file, which a test checks (--check here: exit 1 when the committed file is not what training gives).
"""

from __future__ import annotations

import argparse
import json
import sys
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
DIGITS = 6
TOLERANCE = 1e-4
"""How far a retrained term may drift from the committed one (floating point across machines)."""


def examples() -> tuple[list[str], list[int], list[str]]:
    texts: list[str] = []
    labels: list[int] = []
    for split in eval_classify.TUNING:
        for record in eval_classify.load(split):
            if record["kind"] in ("order", "note"):
                texts.append(record["text"])
                labels.append(int(record["kind"] == "order"))
    return texts, labels, list(eval_classify.TUNING)


def fit() -> tuple[Any, Any, dict[str, Any]]:
    """(the fitted TfidfVectorizer, the fitted LogisticRegression, what they were fitted on)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    texts, labels, splits = examples()
    vectorizer = TfidfVectorizer(analyzer=learned.features, sublinear_tf=True, min_df=MIN_DF)
    matrix = vectorizer.fit_transform(texts)
    classifier = LogisticRegression(C=C, class_weight="balanced", max_iter=10_000).fit(matrix, labels)
    return vectorizer, classifier, {"trained_on": splits, "messages": len(texts), "orders": sum(labels)}


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
    args = parser.parse_args(argv)
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
