"""Gates and the keyword router: pure functions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aurora.gates import GateState, Vote, evaluate
from aurora.policy import parse_policy
from aurora.router import Rules, route

ROOT = Path(__file__).resolve().parent.parent


def test_quorum_counts_distinct_people_other_than_the_submitter() -> None:
    votes = [Vote("sam", "approve", "h"), Vote("alice", "approve", "h"), Vote("alice", "approve", "h")]
    decision = evaluate(2, votes, "h", submitter="sam")
    assert decision.state is GateState.WAITING and decision.missing == 1
    decision = evaluate(2, [*votes, Vote("bob", "approve", "h")], "h", submitter="sam")
    assert decision.state is GateState.OPEN and decision.approvers == ("alice", "bob")


def test_votes_for_another_payload_do_not_count_and_one_rejection_vetoes() -> None:
    assert evaluate(1, [Vote("alice", "approve", "old")], "new", "sam").state is GateState.WAITING
    decision = evaluate(1, [Vote("alice", "approve", "h"), Vote("bob", "reject", "h")], "h", "sam")
    assert decision.state is GateState.REJECTED and decision.rejected_by == "bob"


@pytest.fixture(scope="module")
def rules() -> Rules:
    policy = parse_policy((ROOT / "policy" / "batch8_policy.json").read_text())
    return Rules.from_policy(policy.routing, policy.version)


@pytest.mark.parametrize("text, engine", [
    ("Recherchiere aktuelle Studien zu PBM", "perplexity"),
    ("Literaturrecherche zu Hufrehe", "perplexity"),
    ("Datenbankstruktur für das Lager entwerfen", "claude"),
    ("Implementiere die Funktion", "claude"),
    ("Entwickle eine strategische Marketing-Kampagne", "gpt5_genius"),
])
def test_seed_rules_route_inflected_words(rules: Rules, text: str, engine: str) -> None:
    assert route(text, rules).target == engine


def test_no_substring_false_positives_and_a_default(rules: Rules) -> None:
    decision = route("Scanne den Barcode, prüfe den Unicode", rules)
    assert decision.target == rules.default_engine and decision.hits == ()
    assert decision.reason.startswith("no rule matched")


def test_decision_explains_itself(rules: Rules) -> None:
    decision = route("Recherchiere aktuelle Studien zu PBM", rules).as_dict()
    assert decision["target"] == "perplexity"
    assert decision["text_preview"] == "Recherchiere aktuelle Studien zu PBM"
    assert {h["word"] for h in decision["hits"]} >= {"studien"}
    assert decision["rules_version"]


def test_disabled_routing_answers_the_default(rules: Rules) -> None:
    data = json.loads((ROOT / "policy" / "batch8_policy.json").read_text())
    data["ki_routing"]["enabled"] = False
    policy = parse_policy(json.dumps(data))
    decision = route("Recherchiere Studien", Rules.from_policy(policy.routing, policy.version))
    assert decision.target == "gpt5_genius" and "disabled" in decision.reason
