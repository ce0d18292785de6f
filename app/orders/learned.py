"""A learned second reading of notes and orders, for the requests no rule knows.

A logistic regression over a message's letters, words and the kinds of word the rules know (a
request, a piece, a platform, a wish…), trained on the tuning splits of the labelled corpus in
tests/corpus/classifier by `make train-classifier` (bench/train_classifier.py, scikit-learn) and
stored in learned_model.json beside this file. It runs here in plain Python: the service needs
neither scikit-learn nor NumPy.

The rules decide first (app/orders/rules.py). This model reads only what they found no request in:
"put together 3 tips for…", "rite sumthing abt…", "could you do a twitter version too?". A note the
rules stopped on purpose (a wish, the writer's own plan, a report, reported speech) stays theirs.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from itertools import pairwise
from pathlib import Path

from app.orders import rules

MODEL_PATH = Path(__file__).with_name("learned_model.json")
ORDER_AT = 0.55
"""From this probability the model's reading makes an order of what the rules read as no request."""
ASK_AT = 0.45
"""From this probability (below ORDER_AT) the service asks ("Want me to turn this into a post?").
Both lines were chosen by leaving each blind-written tuning set out of training in turn
(`bench/train_classifier.py --cross-validate`)."""
CHAR_NGRAMS = (3, 5)
"""Letter sequences, within a word padded with spaces: spelling-proof ("sumthing", "escrivime")."""

_LEXICONS: dict[str, frozenset[str] | str] = {
    "noun": rules.STRONG_NOUNS,
    "wnoun": rules.WEAK_NOUNS,
    "plat": frozenset(rules.PLATFORM_WORDS),
    "sverb": rules.STRONG_VERBS,
    "verb": rules.VERBS,
    "you": rules.YOU,
    "please": rules.PLEASE,
    "req": rules.REQUESTS,
    "get": rules.GETS,
    "want": rules.WANTS,
    "poss": rules.POSSIBLE,
    "report": rules.REPORTS,
    "wish": rules.WISHES,
    "self": rules.SELF,
    "field": rules.FIELD_WORDS,
    "qw": rules.QUESTION_WORDS,
    "about": rules.ABOUT,
    "conv": rules.CONVERT_VERBS,
    "make": rules.MAKE_VERBS,
    "greet": rules.GREETINGS,
}
"""The kinds of word the rules know, by name: each word of a message stands for its kind too."""


def _entries(words: frozenset[str] | str) -> list[str]:
    return sorted(words.split() if isinstance(words, str) else words)


_KIND_OF_WORD: dict[str, str] = {}
for _name, _words in _LEXICONS.items():
    for _word in _entries(_words):
        if "_" not in _word:
            _KIND_OF_WORD.setdefault(_word, _name)
_PHRASES: dict[str, re.Pattern[str]] = {
    name: re.compile(r"\b(?:" + "|".join(sorted(phrases, key=len, reverse=True)) + r")\b")
    for name, words in _LEXICONS.items()
    if (phrases := [re.escape(w.replace("_", " ")) for w in _entries(words) if "_" in w])
}
"""Kinds named by several words ("could you", "would it be possible"), found in the whole text."""


def features(text: str) -> list[str]:
    """The features of a message, one entry per occurrence (the model counts them)."""
    flat = rules.Reading.of(text).flat
    words = flat.split()  # "|" marks where a sentence ends
    out: list[str] = []
    low, high = CHAR_NGRAMS
    for word in words:
        if word == "|":
            continue
        padded = f" {word} "
        for n in range(low, min(high, len(padded)) + 1):
            out.extend(padded[i : i + n] for i in range(len(padded) - n + 1))
        out.append("w:" + word)
    out.extend(f"b:{a} {b}" for a, b in pairwise(words))
    kinds = [_KIND_OF_WORD.get(w, "|" if w == "|" else "o") for w in words]
    out.extend("c:" + k for k in kinds if k not in ("o", "|"))
    out.extend("m:" + name for name, pattern in _PHRASES.items() if pattern.search(flat))
    out.extend(f"cb:{a} {b}" for a, b in pairwise(kinds))
    out.extend(f"ct:{a} {b} {c}" for a, b, c in zip(kinds, kinds[1:], kinds[2:], strict=False))
    return out


@dataclass(frozen=True)
class Model:
    intercept: float
    weights: dict[str, tuple[float, float]]
    """feature -> (inverse document frequency, weight)."""

    def probability(self, text: str) -> float:
        """How likely the message is an order (tf-idf, sublinear and L2-normalised; then logistic)."""
        counts = Counter(f for f in features(text) if f in self.weights)
        values = {f: (1.0 + math.log(n)) * self.weights[f][0] for f, n in counts.items()}
        norm = math.sqrt(sum(v * v for v in values.values())) or 1.0
        score = self.intercept + sum(v / norm * self.weights[f][1] for f, v in values.items())
        return 1.0 / (1.0 + math.exp(-score))


def parse(data: object) -> Model:
    """The model of a model file's content; ValueError, naming what is wrong, for anything else."""
    if not isinstance(data, dict):
        raise ValueError("learned model: not a JSON object")
    weights, intercept = data.get("features"), data.get("intercept")
    if not isinstance(intercept, (int, float)) or isinstance(intercept, bool):
        raise ValueError("learned model: 'intercept' is not a number")
    if not isinstance(weights, dict) or not weights:
        raise ValueError("learned model: 'features' is not a non-empty object")
    terms: dict[str, tuple[float, float]] = {}
    for feature, term in weights.items():
        if not (
            isinstance(term, list)
            and len(term) == 2
            and all(isinstance(x, (int, float)) and math.isfinite(x) for x in term)
        ):
            raise ValueError(f"learned model: the terms of feature {feature!r} are not two finite numbers")
        terms[feature] = (float(term[0]), float(term[1]))
    return Model(float(intercept), terms)


@cache
def model() -> Model:
    """The model of learned_model.json, read once per process."""
    return parse(json.loads(MODEL_PATH.read_text(encoding="utf-8")))


def probability(text: str) -> float:
    return model().probability(text)


def second_reading(
    text: str,
    kind: str,
    reason: str,
    *,
    reading: Callable[[str], float] | None = None,
    order_at: float = ORDER_AT,
    ask_at: float = ASK_AT,
) -> tuple[str, str, str]:
    """(kind, via, reason): the rules' reading of a message (`rules.read`), or this model's where
    they found no request. `reading` (a probability for a text) and the lines are given only by the
    cross-validation."""
    if reason != rules.NO_REQUEST:
        return kind, "rules", reason
    chance_of = reading or probability
    chance = chance_of(text)
    if chance < ask_at:
        return kind, "rules", reason
    said = f"learned reading {chance:.2f}"
    if chance < order_at:
        return "unsure", "learned", said
    # Someone else's words, as the rules read them: asked about, never taken as a request to us.
    whose = rules.someone_elses_request(text, lambda part: chance_of(part) >= order_at)
    if whose:
        return "unsure", "learned", f"{said}, but {whose}"
    return "order", "learned", said
