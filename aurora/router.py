"""The KI-router: text in, a decision out (engine, score, the words that matched). Pure.

Matching works on normalised word tokens, never raw substrings, so "Barcode" does not route to
the code engine: text is NFKC-normalised, case-folded, umlauts and ß folded (ä→ae, ß→ss), then
split into words. A keyword matches a word that starts with it and has a short inflection tail
("recherchiere", "studies"), or, for keywords of :data:`COMPOUND_MIN` letters or more, a word
that contains it ("literaturrecherche", "datenbankstruktur").
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

#: a prefix match may leave at most this many letters of inflection
MAX_TAIL = 4
#: keywords at least this long also match inside compound words
COMPOUND_MIN = 6
_FOLD = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss"})
_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def fold(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold().translate(_FOLD)
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def tokens(text: str) -> list[str]:
    return _WORD.findall(fold(text))


@dataclass(frozen=True)
class Keyword:
    word: str
    weight: float = 1.0


@dataclass(frozen=True)
class Rule:
    engine: str
    keywords: tuple[Keyword, ...]
    priority: int = 0
    threshold: float = 1.0


@dataclass(frozen=True)
class Hit:
    keyword: str
    word: str
    how: str  # exact | prefix | compound
    weight: float

    def as_dict(self) -> dict[str, Any]:
        return {"keyword": self.keyword, "word": self.word, "how": self.how, "weight": self.weight}


@dataclass(frozen=True)
class Decision:
    target: str
    score: float
    hits: tuple[Hit, ...]
    runner_up: str | None
    runner_up_score: float
    rules_version: str
    reason: str
    text_preview: str = ""
    scores: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "text_preview": self.text_preview,
            "score": self.score,
            "hits": [h.as_dict() for h in self.hits],
            "runner_up": self.runner_up,
            "runner_up_score": self.runner_up_score,
            "rules_version": self.rules_version,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Rules:
    rules: tuple[Rule, ...]
    default_engine: str
    enabled: bool
    version: str

    @classmethod
    def from_policy(cls, routing: dict[str, Any], version: str) -> Rules:
        rules = []
        for raw in routing.get("rules", []):
            keywords = tuple(
                Keyword(fold(k), 1.0) if isinstance(k, str) else Keyword(fold(k["word"]), float(k.get("weight", 1.0)))
                for k in raw["keywords"]
            )
            rules.append(Rule(raw["engine"], keywords, int(raw.get("priority", 0)), float(raw.get("threshold", 1.0))))
        default = routing.get("default_engine") or (rules[-1].engine if rules else "gpt5_genius")
        return cls(tuple(rules), default, bool(routing.get("enabled", True)), version)


@lru_cache(maxsize=65536)
def _match(keyword: str, word: str) -> str | None:
    if word == keyword:
        return "exact"
    if word.startswith(keyword) and len(word) - len(keyword) <= MAX_TAIL:
        return "prefix"
    if len(keyword) >= COMPOUND_MIN and keyword in word:
        return "compound"
    return None


def preview(text: str, limit: int = 80) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def route(text: str, rules: Rules) -> Decision:
    """Pick the engine for ``text``; ties go to the higher ``priority``, never to list order."""
    if not rules.enabled:
        return Decision(rules.default_engine, 0.0, (), None, 0.0, rules.version,
                        "routing disabled by policy: default engine", preview(text))
    words = tokens(text)
    scored: list[tuple[float, int, str, tuple[Hit, ...]]] = []
    for rule in rules.rules:
        hits = []
        for keyword in rule.keywords:
            for word in words:
                how = _match(keyword.word, word)
                if how:
                    hits.append(Hit(keyword.word, word, how, keyword.weight))
                    break
        score = sum(h.weight for h in hits)
        scored.append((score if score >= rule.threshold else 0.0, rule.priority, rule.engine, tuple(hits)))
    scored.sort(key=lambda s: (s[0], s[1]), reverse=True)
    scores = {engine: score for score, _, engine, _ in scored}
    if not scored or scored[0][0] <= 0:
        return Decision(rules.default_engine, 0.0, (), None, 0.0, rules.version,
                        "no rule matched: default engine", preview(text), scores)
    best, second = scored[0], scored[1] if len(scored) > 1 else None
    return Decision(
        target=best[2],
        score=best[0],
        hits=best[3],
        runner_up=second[2] if second and second[0] > 0 else None,
        runner_up_score=second[0] if second else 0.0,
        rules_version=rules.version,
        reason="highest score" if not second or second[0] < best[0] else "tie broken by priority",
        text_preview=preview(text),
        scores=scores,
    )
