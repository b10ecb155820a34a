"""Attacks on workflows of several steps: templates that would exhaust the web process at submit,
reruns that would repeat a live effect or act for someone else, a sweeper that forgets workflows."""

from __future__ import annotations

import json

import pytest
from conftest import end_step_unhanded, shown
from test_adapters_live import live  # noqa: F401 - the fixture: fake providers and a live policy

from aurora import documents, flow_runs
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


# -- reruns -------------------------------------------------------------------------------------

MAIL_THEN_MAIL = """name: mail_then_mail
steps:
  - {id: welcome, goal: send_email, payload: {to: neu@example.com, subject: Willkommen, text: Hallo}}
  - {id: later, goal: send_email, needs: [welcome], payload: {to: neu@example.com, subject: Danach, text: x}}
"""


def _drive(engine, run_id: str) -> None:
    todo = [run_id]
    while todo:
        todo += [follow for follow, _ in engine.execute(todo.pop(0)).follow_up]


def _children(runtime, parent_id: str) -> dict:
    from sqlalchemy import select

    from aurora.models import Run

    with runtime.db.read() as session:
        return {r.step_id: r for r in session.scalars(
            select(Run).where(Run.parent_id == parent_id).order_by(Run.step_attempt))}


def test_a_rerun_never_repeats_a_mail_that_may_have_been_sent(live) -> None:  # noqa: F811
    """The live mail timed out after Mailgun took it: the step needs reconciliation, and so does the
    workflow. A rerun must not send it again (with a new run id, so a new idempotency key)."""
    from fakes import Reply

    from aurora import flow_runs
    from aurora.errors import Conflict

    live.set_policy(security__auto_rollback_on_failure=False)  # else mailgun is simulated from then on
    runtime, engine, mailgun = live.runtime, live.runtime.engine, live.servers["mailgun"]
    mailgun.script("/v3/", Reply(200, {"id": "<x>", "message": "Queued"}, delay=1.5))
    run_id = engine.submit(documents.load(MAIL_THEN_MAIL), "sam").id
    _drive(engine, run_id)
    assert _children(runtime, run_id)["welcome"].status == "needs_reconciliation"
    assert len(mailgun.received) == 1
    for from_step in (None, "welcome"):
        with pytest.raises(Conflict, match="may have"):
            again = flow_runs.rerun(engine, run_id, "sam", "sam", from_step=from_step)
            _drive(engine, again.id)
    assert len(mailgun.received) == 1, "the mail that may have been sent was sent again"


def test_a_rerun_waits_for_a_step_still_acting_after_its_workflow_was_cancelled(live) -> None:  # noqa: F811
    """Cancel stops only what has not begun acting: the workflow is cancelled (final) while its
    step is in the middle of the live send. A rerun then must not start that step a second time."""
    from sqlalchemy import select, update

    from aurora import flow_runs
    from aurora.errors import Conflict
    from aurora.models import Run, RunStep, utcnow

    runtime, engine, mailgun = live.runtime, live.runtime.engine, live.servers["mailgun"]
    run_id = engine.submit(documents.load(MAIL_THEN_MAIL), "sam").id
    welcome = _children(runtime, run_id)["welcome"]
    with runtime.db.write() as session:  # a worker is in the middle of the live send
        session.execute(update(Run).where(Run.id == welcome.id).values(
            status="running", step="act", attempts=1, lease_owner="busy", lease_expires_at=utcnow().replace(year=2100)))
        session.add(RunStep(run_pk=session.scalar(select(Run.pk).where(Run.id == welcome.id)), step="act", status="started", result={"mode": "live"}))
    assert engine.cancel(run_id, "sam") == "cancelled"
    assert _children(runtime, run_id)["welcome"].status == "running"
    with pytest.raises(Conflict, match="still running"):
        again = flow_runs.rerun(engine, run_id, "sam", "sam")
        _drive(engine, again.id)
    assert mailgun.received == [], "the step still acting was started a second time"


def test_only_the_submitter_or_an_admin_may_rerun_a_workflow(client, api_keys, runtime) -> None:
    """Like cancel: a rerun acts again with the first submitter's document and inputs (and makes its
    caller the submitter, whose person may then approve what the first submitter may not)."""
    body = json.dumps({"document": MAIL_THEN_MAIL.replace("neu@example.com", '"{{ inputs.who }}"')
                       .replace("name: mail_then_mail", "name: m\ninputs: {who: {format: email}}"),
                       "inputs": {"who": "kunde@example.com"}})
    created = client.post("/workflows", data=body, headers={"Content-Type": "application/json",
                                                           **api_keys.header("submitter")})
    assert created.status_code == 201, created.json
    run_id = created.json["id"]
    _drive(runtime.engine, run_id)
    other = client.post(f"/workflows/{run_id}/rerun", headers=api_keys.header("other_submitter"))
    assert other.status_code == 403, other.json
    assert client.post(f"/workflows/{run_id}/rerun", headers=api_keys.header("submitter")).status_code == 201
    assert client.post(f"/workflows/{run_id}/rerun", headers=api_keys.header("admin")).status_code == 201


# -- the sweeper ------------------------------------------------------------------------------

def test_the_sweeper_advances_a_workflow_behind_two_hundred_that_wait_for_votes(runtime) -> None:
    """Many workflows wait for a charge's votes (for days); one step's worker dies before it hands
    its workflow on. The sweeper must still advance that one (it took the 200 oldest running)."""
    engine = runtime.engine
    charge = ("name: waits\nsteps:\n  - {id: pay, goal: charge, payload: {customer: cus_1, amount: \"1.00\", "
              "currency: EUR}}\n")
    for _ in range(201):
        engine.submit(documents.load(charge), "sam")
    run_id = engine.submit(documents.load(MAIL_THEN_MAIL), "sam").id
    welcome = _children(runtime, run_id)["welcome"]
    end_step_unhanded(runtime, welcome.id)  # the step ends, nothing hands it on
    assert "later" not in _children(runtime, run_id)
    sent = [rid for rid, _ in flow_runs.advance_all(engine)]
    assert _children(runtime, run_id)["later"].id in sent
    assert flow_runs.advance_all(engine) == []  # and nothing twice; the waiting ones cost no write


def test_a_workflow_submitted_while_the_policy_is_broken_starts_once_it_is_fixed(runtime, env) -> None:
    """Its steps cannot be created (a charge's ceiling, a step's mode need the policy): the workflow
    waits, and neither the sweeper nor a step's worker breaks on it."""
    from pathlib import Path

    from aurora.config import load_settings
    from aurora.runtime import Runtime

    policy = Path(env["AURORA_POLICY_FILE"])
    good = policy.read_text()
    policy.write_text("{not json")
    engine = Runtime(load_settings(env)).engine  # a process that never saw a good policy
    run_id = engine.submit(documents.load(MAIL_THEN_MAIL), "sam").id
    assert _children(runtime, run_id) == {}
    assert flow_runs.advance_all(engine) == []  # the sweep goes on (it raised ConfigError here)
    assert engine.execute(run_id).follow_up == ()  # a forged or repeated message for it, too
    policy.write_text(good)
    engine.policies._mtime, engine.policies._checked_at = None, 0  # noqa: SLF001
    for rid, _ in flow_runs.advance_all(engine):
        _drive(engine, rid)
    assert {s.status for s in _children(runtime, run_id).values()} == {"succeeded"}


def test_advancing_right_after_a_policy_edit_does_not_hang(runtime, env) -> None:
    """A step's worker (or the sweeper) may be the first to notice a policy edit while advancing,
    inside the write transaction; recording that reload needs a write of its own: on SQLite, the
    writers' lock this very thread holds. It must not wait for itself (and freeze every writer)."""
    import threading
    from pathlib import Path

    engine = runtime.engine
    run_id = engine.submit(documents.load(MAIL_THEN_MAIL), "sam").id
    end_step_unhanded(runtime, _children(runtime, run_id)["welcome"].id)
    policy = Path(env["AURORA_POLICY_FILE"])
    edited = json.loads(policy.read_text())
    edited["approvals"] = {**edited.get("approvals", {}), "timeout_hours": 48}
    policy.write_text(json.dumps(edited))
    engine.policies._checked_at = 0  # noqa: SLF001 - the second since the last look has passed
    sweeper = engine
    done: list = []
    thread = threading.Thread(target=lambda: done.append(flow_runs.advance_all(sweeper)), daemon=True)
    thread.start()
    thread.join(timeout=20)
    assert done, "advancing hung: the policy's reload waited for the write lock its own thread held"
    assert [rid for rid, _ in done[0]] == [_children(runtime, run_id)["later"].id]
    assert engine.policies.current().approval_timeout_seconds == 48 * 3600


# -- a step that ends outside a worker ----------------------------------------------------------

PAY_THEN_MAIL = """name: pay_then_mail
steps:
  - {id: pay, goal: charge, payload: {customer: cus_1, amount: "9.99", currency: EUR}}
  - {id: thanks, goal: send_email, needs: [pay], payload: {to: a@example.com, subject: Danke, text: x}}
"""


def _waiting_charge(runtime) -> tuple[str, str]:
    engine = runtime.engine
    run_id = engine.submit(documents.load(PAY_THEN_MAIL), "sam").id
    _drive(engine, run_id)
    pay = _children(runtime, run_id)["pay"]
    assert pay.status == "awaiting_approval"
    return run_id, pay.id


def _parent(runtime, run_id: str):
    from sqlalchemy import select

    from aurora.models import Run

    with runtime.db.read() as session:
        return session.scalar(select(Run).where(Run.id == run_id))


def test_a_step_rejected_by_its_voters_ends_its_workflow_at_once(runtime) -> None:
    """The rejection is written by the vote itself, in the web process: no worker finishes the
    step, so nothing handed the workflow on (it stayed running until a sweep)."""
    from aurora import approvals
    from aurora.keys import Caller
    from aurora.models import Role

    run_id, pay = _waiting_charge(runtime)
    approvals.vote(runtime.engine, pay, Caller("alice", Role.APPROVER), "reject", "no", "api", shown(runtime, pay))
    parent = _parent(runtime, run_id)
    assert _children(runtime, run_id)["thanks"].status == "skipped"
    assert parent.status == "failed" and parent.error["step"] == "pay"


def test_a_step_cancelled_on_its_own_ends_its_workflow_at_once(runtime) -> None:
    run_id, pay = _waiting_charge(runtime)
    assert runtime.engine.cancel(pay, "sam") == "cancelled"
    assert _parent(runtime, run_id).status == "cancelled"
    assert _children(runtime, run_id)["thanks"].status == "skipped"


# -- inputs -----------------------------------------------------------------------------------

def test_a_json_workflow_as_text_beside_its_inputs_is_read_as_json(client, api_keys) -> None:
    """``aurora submit flow.json --input …`` sends the file's text as ``document``; read as YAML,
    JSON's escapes (an emoji as ``\\ud83d\\ude00``, what json.dumps writes) are invalid."""
    document = {"name": "j", "inputs": {"who": {"format": "email"}}, "steps": [
        {"id": "a", "goal": "send_email", "payload": {"to": "{{ inputs.who }}", "subject": "Hallo 😀",
                                                      "text": "http://example.com/x"}}]}
    body = json.dumps({"document": json.dumps(document, indent=2), "inputs": {"who": "k@example.com"}})
    created = client.post("/workflows", data=body, headers={"Content-Type": "application/json",
                                                           **api_keys.header("submitter")})
    assert created.status_code == 201, created.json


NUMBER_FLOW = json.dumps({"name": "n", "inputs": {"n": {"type": "number"}}, "steps": [
    {"id": "a", "goal": "send_email", "payload": {"to": "a@example.com", "subject": "S", "text": "{{ inputs.n }}"}}]})


@pytest.mark.parametrize("given", ["1e300000", "1e5000", 1e400, "-1e16"])
def test_a_number_input_too_large_is_a_problem_not_minutes_of_cpu_or_a_500(given) -> None:
    # int(Decimal("1e300000")) computes 10 ** 300000: 16 s here (1e3000000: hours); a number past
    # 4300 digits cannot be stored as JSON (ValueError: a 500)
    with pytest.raises(DocumentError) as caught:
        documents.load(NUMBER_FLOW, fmt="json", inputs={"n": given})
    assert caught.value.problems[0].path == "inputs.n"


@pytest.mark.parametrize("given", ["<b>x</b>@example.com", "a@-example.com", "a@example", "Shop <a@example.com>",
                                   "a\x00@example.com", "a\x01\x7f@example.com"])
def test_an_email_input_is_checked_as_the_schema_checks_an_address(given) -> None:
    # one rule for "an email address": what a task's own "to" would refuse, an input refuses too
    document = json.loads(NUMBER_FLOW)
    document["inputs"]["n"] = {"format": "email"}
    with pytest.raises(DocumentError) as caught:
        documents.load(json.dumps(document), fmt="json", inputs={"n": given})
    assert caught.value.problems[0].path == "inputs.n"
    assert documents.load(json.dumps(document), fmt="json", inputs={"n": "kunde@example.com"}).inputs == {
        "n": "kunde@example.com"}


def test_an_input_default_is_checked_like_a_given_value() -> None:
    for spec in ({"type": "integer", "default": "abc"}, {"format": "email", "default": "nobody"},
                 {"enum": ["a", "b"], "default": "c"}, {"type": "number", "default": "1e300000"}):
        document = json.loads(NUMBER_FLOW)
        document["inputs"]["n"] = spec
        with pytest.raises(DocumentError) as caught:
            documents.load(json.dumps(document), fmt="json")
        assert caught.value.problems[0].path == "inputs.n", spec


def test_thousands_of_small_templates_over_a_long_input_share_one_allowance_of_work() -> None:
    """Each template is small and each input within bounds, but 500 of them each stripping the
    tags of a 20,000-character input kept the web process busy for seconds per request (a 256 KB
    document: minutes); an input past what a template may render at all is refused outright."""
    payload = {"to": "a@example.com", "subject": "S", "text": "t"}
    payload.update({f"k{i}": "{{ inputs.x|striptags }}" for i in range(500)})
    document = json.dumps({"name": "x", "inputs": {"x": {}}, "steps": [
        {"id": "a", "goal": "send_email", "payload": payload}]})
    with pytest.raises(DocumentError) as caught:
        documents.load(document, fmt="json", inputs={"x": "<>" * 10000})
    assert any("too much work" in p.message for p in caught.value.problems), caught.value.problems[:3]
    with pytest.raises(DocumentError, match="20000 characters"):
        documents.load(document, fmt="json", inputs={"x": "<>" * 100000})


def test_a_repeated_message_for_a_workflow_does_not_start_a_retry_before_its_backoff(live) -> None:  # noqa: F811
    """A message for the workflow's own run (a redelivery, or forged) sends its queued first
    attempts again; a retry waiting out its backoff is not one of them."""
    from fakes import Reply

    runtime, engine, mailgun = live.runtime, live.runtime.engine, live.servers["mailgun"]
    mailgun.script("/v3", Reply(400, {"message": "try again"}))
    text = MAIL_THEN_MAIL.replace("{id: welcome, goal: send_email,", "{id: welcome, goal: send_email, "
                                  "retry: {attempts: 2, backoff: 3600},")
    run_id = engine.submit(documents.load(text), "sam").id
    first = _children(runtime, run_id)["welcome"]
    assert [delay for _, delay in engine.execute(first.id).follow_up] == [3600.0]  # refused: retry in an hour
    welcome = _children(runtime, run_id)["welcome"]
    assert welcome.step_attempt == 2 and welcome.status == "queued"  # waiting out its hour
    assert welcome.id not in [rid for rid, delay in engine.execute(run_id).follow_up if not delay]


def test_a_template_sees_only_the_steps_it_needs_even_through_a_computed_name(runtime) -> None:
    """``steps[name]`` with a computed name escapes the submit-time check of what a template names;
    at run time it must still not read a step outside its needs (a sibling that happened to end)."""
    engine = runtime.engine
    text = """name: peek
steps:
  - {id: secret, goal: analyse, payload: {text: "geheim"}}
  - {id: first, goal: send_email, payload: {to: a@example.com, subject: S, text: x}}
  - id: peek
    goal: send_email
    needs: [first]
    payload: {to: a@example.com, subject: S, text: "{{ (steps['sec' ~ 'ret'] | default({'output': {'text': 'none'}})).output.text }}"}
"""
    run_id = engine.submit(documents.load(text), "sam").id
    kids = _children(runtime, run_id)
    engine._execute(kids["secret"].id, "w")  # noqa: SLF001 - the sibling ends first
    _drive(engine, kids["first"].id)
    peek = _children(runtime, run_id)["peek"]
    assert "geheim" not in peek.document["payload"]["text"], peek.document["payload"]["text"]


def test_an_input_given_twice_on_the_command_line_is_refused_not_silently_the_last(tmp_path) -> None:
    from click.testing import CliRunner

    from aurora.cli import main

    flow = tmp_path / "flow.yaml"
    flow.write_text(NUMBER_FLOW)
    result = CliRunner().invoke(main, ["validate", str(flow), "--input", "n=1", "--input", "n=2"])
    assert result.exit_code == 2 and "given twice" in result.output, result.output
    assert CliRunner().invoke(main, ["validate", str(flow), "--input", "n=1"]).exit_code == 0
