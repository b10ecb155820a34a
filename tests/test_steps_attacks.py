"""Attacks on workflows of several steps: templates that would exhaust the web process at submit,
reruns that would repeat a live effect or act for someone else, a sweeper that forgets workflows."""

from __future__ import annotations

import json

import pytest

from aurora import documents
from aurora.errors import DocumentError


def flow_with(template: str, key: str = "text") -> str:
    return json.dumps({"name": "bomb", "steps": [{"id": "a", "goal": "send_email", "payload": {
        "to": "a@example.com", "subject": "Hi", "text": "x", key: template}}]})


@pytest.mark.parametrize("template", [
    # nested: Jinja's parser, its compiler and Python's compiler recurse once per level
    "{{ " + "(" * 200 + "1" + ")" * 200 + " }}",
    "{{ " + "[" * 300 + "1" + "]" * 300 + " }}",
    "{{ " + "-" * 1000 + "1 }}",
    "{{ 'x'" + ".a" * 200 + " }}",
    "{{ 'x'" + "|trim" * 400 + " }}",
    "{{ " + "+".join(["1"] * 900) + " }}",
    # a list repeated inside a list: small in memory, 1.2 GB as text (|string, |tojson, |join)
    "{{ ([[1] * 20000] * 20000)|length }}",
    # values past the ceiling built with ~ and + (then fed to a slow filter, again and again)
    "{{ (('<>' * 10000) ~ ('<>' * 10000))|length }}",
    "{{ (('<>' * 10000) + ('<>' * 10000))|length }}",
])
def test_templates_that_would_exhaust_the_web_process_are_refused_at_submit(template: str) -> None:
    with pytest.raises(DocumentError) as caught:
        documents.load(flow_with(template), fmt="json")
    assert caught.value.problems[0].path == "steps[0].payload.text", caught.value.problems


def test_round_refuses_a_precision_that_would_take_minutes() -> None:
    # round(x, n, "floor") computes 10 ** n first: n = 10 ** 7 took 110 s of CPU here
    with pytest.raises(DocumentError, match="precision"):
        documents.load(flow_with("{{ 1.5|round(1000000, 'floor') }}"), fmt="json")


def test_a_deep_condition_is_a_problem_with_its_path_not_a_crash() -> None:
    document = json.loads(flow_with("x"))
    document["steps"][0]["if"] = "[" * 300 + "1" + "]" * 300
    with pytest.raises(DocumentError) as caught:
        documents.load(json.dumps(document), fmt="json")
    assert caught.value.problems[0].path == "steps[0].if"


def test_a_deep_template_is_a_422_through_the_api(client, api_keys) -> None:
    body = flow_with("{{ " + "(" * 200 + "1" + ")" * 200 + " }}")
    answer = client.post("/workflows", data=body, headers={"Content-Type": "application/json",
                                                           **api_keys.header("submitter")})
    assert answer.status_code == 422, answer.data[:300]
    assert answer.json["errors"][0]["path"] == "steps[0].payload.text"


def test_what_the_limits_leave_is_still_usable() -> None:
    from aurora.templating import render

    ctx = {"inputs": {"n": 2.345}, "steps": {}}
    assert render("{{ inputs.n|round(2) }} {{ 'ab' * 3 }} {{ [1, 2] + [3] }} {{ 'a' ~ 'b' }}", ctx) == "2.35 ababab [1, 2, 3] ab"
    assert render("{{ " + "(" * 20 + "1" + ")" * 20 + " }}", ctx) == "1"
