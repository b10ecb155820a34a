"""The KI-router: text in, a decision out (engine, score, every word that matched). Pure.

Matching works on words, never raw substrings, so "Barcode" does not route to the code engine.
Text is NFKC-normalised, case-folded, umlauts and ß folded (ä→ae, ß→ss), accents dropped, and
split into words. Each word and each keyword is reduced to its German and English Snowball stems
(PyStemmer). A keyword matches a word when

- ``stem``: one of their stems is equal ("studies" ~ "study", "Studien" ~ "Studie");
- ``prefix``: the word starts with the keyword's stem and at most :data:`MAX_TAIL` letters of
  inflection follow ("recherchiere", "implementiert");
- ``compound``: the keyword's stem has at least :data:`COMPOUND_MIN` letters and stands anywhere
  in the word ("Literaturrecherche", "Datenbankstruktur", "Marketingplan"). Shorter keywords
  ("code", "seo") match only at the start of a word, with a short tail.

A rule's score is the sum of the weights of its keywords that matched (each keyword, with its
aliases, counts once). A rule below its threshold scores 0. The highest score wins; a tie goes to
the higher ``priority``, never to the order of the list; no match at all goes to the default.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import Stemmer

#: a prefix match may leave at most this many letters of inflection
MAX_TAIL = 5
#: keywords whose stem has at least this many letters also match inside compound words
COMPOUND_MIN = 6
#: per-rule-set cache of analysed words
WORD_CACHE_SIZE = 50_000

_FOLD = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss"})
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_GERMAN = Stemmer.Stemmer("german")
_ENGLISH = Stemmer.Stemmer("english")


def fold(text: str) -> str:
    """NFKC, casefold, German umlauts and ß spelled out, other accents dropped."""
    text = unicodedata.normalize("NFKC", text).casefold().translate(_FOLD)
    if text.isascii():
        return text
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def words(text: str) -> list[str]:
    return _WORD.findall(fold(text))


def stems(word: str) -> frozenset[str]:
    return frozenset({_GERMAN.stemWord(word), _ENGLISH.stemWord(word)})


@dataclass(frozen=True)
class Keyword:
    """One keyword with its aliases (other languages, spellings); they count once together."""

    word: str
    aliases: tuple[str, ...] = ()
    weight: float = 1.0

    @property
    def forms(self) -> tuple[str, ...]:
        return (self.word, *self.aliases)


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
    how: str  # stem | prefix | compound
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
    ranking: tuple[str, ...] = ()
    fallback: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        out = {
            "target": self.target,
            "text_preview": self.text_preview,
            "score": self.score,
            "hits": [h.as_dict() for h in self.hits],
            "runner_up": self.runner_up,
            "runner_up_score": self.runner_up_score,
            "rules_version": self.rules_version,
            "reason": self.reason,
            "ranking": list(self.ranking),
        }
        if self.fallback:
            out["fallback"] = self.fallback
        return out


@dataclass(frozen=True)
class _Form:
    """A keyword form prepared for matching."""

    keyword: int  # index into Rules.keywords
    stems: frozenset[str]
    shortest: str


@dataclass
class Rules:
    """A compiled rule set; build it with :meth:`from_policy` (cached per policy version)."""

    rules: tuple[Rule, ...]
    default_engine: str
    enabled: bool
    version: str
    _forms: list[_Form] = field(default_factory=list, repr=False)
    _owners: list[tuple[int, Keyword]] = field(default_factory=list, repr=False)
    _by_prefix: dict[str, list[_Form]] = field(default_factory=dict, repr=False)
    _long: list[_Form] = field(default_factory=list, repr=False)
    _by_stem: dict[str, list[_Form]] = field(default_factory=dict, repr=False)
    _cache: dict[str, tuple[tuple[int, str], ...]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for rule_index, rule in enumerate(self.rules):
            for keyword in rule.keywords:
                index = len(self._owners)
                self._owners.append((rule_index, keyword))
                for form in keyword.forms:
                    folded = fold(form)
                    form_stems = stems(folded) | {folded}
                    prepared = _Form(index, frozenset(form_stems), min(form_stems, key=len))
                    self._forms.append(prepared)
                    self._by_prefix.setdefault(prepared.shortest[:3], []).append(prepared)
                    for stem in form_stems:
                        self._by_stem.setdefault(stem, []).append(prepared)
                    if len(prepared.shortest) >= COMPOUND_MIN:
                        self._long.append(prepared)

    @classmethod
    def from_policy(cls, routing: dict[str, Any], version: str) -> Rules:
        cached = _COMPILED.get(version)
        if cached is not None:
            return cached
        rules = []
        for raw in routing.get("rules", []):
            keywords = tuple(
                Keyword(k) if isinstance(k, str)
                else Keyword(k["word"], tuple(k.get("aliases", ())), float(k.get("weight", 1.0)))
                for k in raw["keywords"]
            )
            rules.append(Rule(raw["engine"], keywords, int(raw.get("priority", 0)), float(raw.get("threshold", 1.0))))
        default = routing.get("default_engine") or (rules[-1].engine if rules else "gpt5_genius")
        compiled = cls(tuple(rules), default, bool(routing.get("enabled", True)), version)
        if len(_COMPILED) > 16:
            _COMPILED.clear()
        _COMPILED[version] = compiled
        return compiled

    def engines(self) -> list[str]:
        """Every engine the rules know, by priority, the default engine included."""
        ordered = [r.engine for r in sorted(self.rules, key=lambda r: -r.priority)]
        return ordered + ([self.default_engine] if self.default_engine not in ordered else [])

    def _match_word(self, word: str) -> tuple[tuple[int, str], ...]:
        """Which keywords a word matches, and how; cached, since vocabularies repeat."""
        found = self._cache.get(word)
        if found is not None:
            return found
        matches: dict[int, str] = {}
        for stem in stems(word) | {word}:
            for form in self._by_stem.get(stem, ()):
                matches.setdefault(form.keyword, "stem")
        for form in self._by_prefix.get(word[:3], ()):
            if form.keyword not in matches and word.startswith(form.shortest) \
                    and len(word) - len(form.shortest) <= MAX_TAIL:
                matches[form.keyword] = "prefix"
        for form in self._long:
            if form.keyword not in matches and form.shortest in word:
                matches[form.keyword] = "compound"
        result = tuple(matches.items())
        if len(self._cache) >= WORD_CACHE_SIZE:
            self._cache.clear()
        self._cache[word] = result
        return result

    def hits(self, text_words: Iterable[str]) -> dict[int, list[Hit]]:
        """Hits per rule index; each keyword counted once, at its first match."""
        seen: set[int] = set()
        used: set[tuple[int, str]] = set()  # a word counts once per rule, however many keywords it fits
        per_rule: dict[int, list[Hit]] = {}
        for word in text_words:
            matches = sorted(self._match_word(word), key=lambda m: -self._owners[m[0]][1].weight)
            for keyword_index, how in matches:
                rule_index, keyword = self._owners[keyword_index]
                if keyword_index in seen or (rule_index, word) in used:
                    continue
                seen.add(keyword_index)
                used.add((rule_index, word))
                per_rule.setdefault(rule_index, []).append(Hit(keyword.word, word, how, keyword.weight))
        return per_rule


_COMPILED: dict[str, Rules] = {}


def preview(text: str, limit: int = 80) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def route(text: str, rules: Rules) -> Decision:
    """Pick the engine for ``text`` and say why."""
    if not rules.enabled:
        return Decision(rules.default_engine, 0.0, (), None, 0.0, rules.version,
                        "routing disabled by policy: default engine", preview(text), tuple(rules.engines()))
    per_rule = rules.hits(words(text))
    scored = []
    for index, rule in enumerate(rules.rules):
        hits = tuple(per_rule.get(index, ()))
        score = sum(h.weight for h in hits)
        scored.append((score if score >= rule.threshold else 0.0, rule.priority, rule.engine, hits))
    scored.sort(key=lambda s: (s[0], s[1]), reverse=True)
    ranking = [engine for score, _, engine, _ in scored if score > 0]
    ranking += [e for e in rules.engines() if e not in ranking]
    if not scored or scored[0][0] <= 0:
        return Decision(rules.default_engine, 0.0, (), None, 0.0, rules.version,
                        "no rule matched: default engine", preview(text),
                        tuple([rules.default_engine] + [e for e in ranking if e != rules.default_engine]))
    best = scored[0]
    second = scored[1] if len(scored) > 1 and scored[1][0] > 0 else None
    reason = "highest score" if second is None or second[0] < best[0] else "tie broken by priority"
    return Decision(
        target=best[2],
        score=best[0],
        hits=best[3],
        runner_up=second[2] if second else None,
        runner_up_score=second[0] if second else 0.0,
        rules_version=rules.version,
        reason=reason,
        text_preview=preview(text),
        ranking=tuple(ranking),
    )
