"""Measure the router on labelled texts: accuracy, a confusion matrix, and what it got wrong."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import AuroraError
from .router import Rules, route


class EvalFileError(AuroraError):
    """Raised when a labelled file has a line that is not ``{"text": ..., "target": ...}``."""

    code = "bad_eval_file"


@dataclass
class Report:
    total: int = 0
    correct: int = 0
    confusion: dict[str, dict[str, int]] = field(default_factory=dict)
    wrong: list[dict[str, Any]] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"total": self.total, "correct": self.correct, "accuracy": round(self.accuracy, 4),
                "confusion": self.confusion, "wrong": self.wrong}

    def render(self) -> str:
        labels = sorted({*self.confusion, *(p for row in self.confusion.values() for p in row)})
        width = max([len(x) for x in labels] + [12])
        lines = [f"accuracy: {self.accuracy:.1%} ({self.correct}/{self.total})", "",
                 "confusion (rows: expected, columns: routed)",
                 " " * width + " " + " ".join(f"{x:>{width}}" for x in labels)]
        for expected in labels:
            row = self.confusion.get(expected, {})
            lines.append(f"{expected:<{width}} " + " ".join(f"{row.get(x, 0):>{width}}" for x in labels))
        if self.wrong:
            lines += ["", "wrong:"]
            lines += [f"  expected {w['target']}, got {w['routed']}: {w['text']}" for w in self.wrong]
        return "\n".join(lines)


def load_labelled(path: Path) -> list[tuple[str, str]]:
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            items.append((str(item["text"]), str(item["target"])))
        except (json.JSONDecodeError, KeyError, TypeError):
            raise EvalFileError(f"{path}:{number}: expected a JSON object with 'text' and 'target'") from None
    return items


def evaluate(rules: Rules, items: Iterable[tuple[str, str]]) -> Report:
    report = Report()
    for text, target in items:
        decision = route(text, rules)
        report.total += 1
        row = report.confusion.setdefault(target, {})
        row[decision.target] = row.get(decision.target, 0) + 1
        if decision.target == target:
            report.correct += 1
        else:
            report.wrong.append({"text": text, "target": target, "routed": decision.target,
                                 "hits": [h.word for h in decision.hits]})
    return report
