"""Workflows of several steps on a real database (SQLite and PostgreSQL): the graph's semantics."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import whole_run
from sqlalchemy import select

from aurora import documents
from aurora.engine import Engine
from aurora.errors import Conflict, DocumentError
from aurora.models import Event, Run

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def engine(each_db) -> Engine:
    return each_db.engine


def drive(engine: Engine, run_id: str, limit: int = 100) -> list[str]:
    """Do what the workers do: execute the run, then whatever each execution hands on."""
    todo, done = [run_id], []
    while todo and len(done) < limit:
        current = todo.pop(0)
        outcome = engine.execute(current)
        done.append(current)
        todo += [follow for follow, _ in outcome.follow_up]
    return done


def run_of(engine: Engine, run_id: str) -> Run:
    with engine.db.read() as session:
        return whole_run(session, session.scalar(select(Run).where(Run.id == run_id)))


def children(engine: Engine, run_id: str) -> dict[str, Run]:
    with engine.db.read() as session:
        return {r.step_id: whole_run(session, r) for r in session.scalars(select(Run).where(Run.parent_id == run_id).order_by(Run.step_attempt))}


def submit(engine: Engine, text: str, **inputs) -> str:
    return engine.submit(documents.load(text, inputs=inputs), "sam").id


def test_research_then_report_runs_end_to_end_in_dry_run(engine: Engine) -> None:
    text = (ROOT / "workflows" / "research_report.yaml").read_text()
    run_id = submit(engine, text, customer_email="kunde@example.com")
    drive(engine, run_id)
    run = run_of(engine, run_id)
    assert run.status == "succeeded", run.error
    steps = children(engine, run_id)
    assert steps["research"].status == "succeeded" and steps["report"].status == "succeeded"
    mail = steps["report"].result["request"]["form"]
    assert mail["to"] == ["kunde@example.com"]
    assert "simulated analysis" in mail["text"] and "Hufrehe" in mail["text"]
    assert run.result["mode"] == "simulated"
    with engine.db.read() as session:
        kinds = [e.type for e in session.scalars(select(Event).where(Event.run_id == run_id).order_by(Event.seq))]
    assert kinds[0] == "run.queued" and kinds[-1] == "run.succeeded"
    assert kinds.count("step.started") == 2 and kinds.count("step.succeeded") == 2


def flow(*steps: str, inputs: str = "") -> str:
    return "name: flow\n" + (f"inputs:\n{inputs}" if inputs else "") + "steps:\n" + "".join(steps)


MAIL_STEP = "  - id: {id}\n    goal: send_email\n{extra}    payload: {{to: {to}, subject: Hi, text: \"{text}\"}}\n"


def mail(step_id: str, needs: str = "", cond: str = "", to: str = "a@example.com", text: str = "Hallo") -> str:
    extra = (f"    needs: [{needs}]\n" if needs else "") + (f"    if: \"{cond}\"\n" if cond else "")
    return MAIL_STEP.format(id=step_id, extra=extra, to=to, text=text)


def test_independent_steps_are_sent_together_and_their_join_waits_for_both(engine: Engine) -> None:
    run_id = submit(engine, flow(mail("a"), mail("b"), mail("c", needs="a, b")))
    first = engine.execute(run_id)
    assert len(first.follow_up) == 2  # a and b at once: two workers can take them
    steps = children(engine, run_id)
    assert set(steps) == {"a", "b"}
    engine.execute(steps["a"].id)
    assert "c" not in children(engine, run_id)  # b has not finished
    for follow, _ in engine.execute(steps["b"].id).follow_up:
        drive(engine, follow)
    assert run_of(engine, run_id).status == "succeeded"
    assert children(engine, run_id)["c"].status == "succeeded"


def test_a_false_condition_skips_the_step_and_what_needs_it(engine: Engine) -> None:
    text = flow(mail("a"), mail("b", cond="inputs.send_b"), mail("c", needs="b"), mail("d", needs="a"),
                inputs="  send_b: {type: boolean, default: false}\n")
    run_id = submit(engine, text)
    drive(engine, run_id)
    steps = children(engine, run_id)
    assert steps["b"].status == "skipped" and steps["b"].error["type"] == "condition_false"
    assert steps["c"].status == "skipped" and "b (skipped)" in steps["c"].error["message"]
    assert steps["d"].status == "succeeded"
    assert run_of(engine, run_id).status == "succeeded"

    run_id = submit(engine, text, send_b="true")  # from a command line: text, converted
    drive(engine, run_id)
    assert {s.status for s in children(engine, run_id).values()} == {"succeeded"}


def test_a_failed_step_skips_its_dependents_and_fails_the_workflow_with_the_reason(engine: Engine) -> None:
    # The analysis' text has a line break: as a mail subject it fails validation once rendered
    # (at submit, the output's documented shape has none: only the real output shows it).
    text = flow('  - {id: research, goal: analyse, payload: {text: "Hufrehe\\nLaminitis"}}\n',
                "  - id: mail\n    goal: send_email\n    needs: [research]\n"
                "    payload: {to: a@example.com, subject: \"{{ steps.research.output.text }}\", text: x}\n",
                mail("after", needs="mail"), mail("other"))
    run_id = submit(engine, text)
    drive(engine, run_id)
    run, steps = run_of(engine, run_id), children(engine, run_id)
    assert steps["mail"].status == "failed" and steps["mail"].error["type"] == "invalid_step"
    assert "steps[1].payload.subject" in steps["mail"].error["message"]
    assert steps["after"].status == "skipped" and steps["other"].status == "succeeded"
    assert run.status == "failed" and run.error["step"] == "mail" and "subject" in run.error["message"]


def test_cancel_stops_the_steps_that_have_not_acted(engine: Engine) -> None:
    text = flow(mail("welcome"), "  - id: charge\n    goal: charge\n    needs: [welcome]\n"
                "    payload: {customer: cus_1, amount: \"9.99\", currency: EUR}\n")
    run_id = submit(engine, text)
    drive(engine, run_id)
    steps = children(engine, run_id)
    assert steps["charge"].status == "awaiting_approval"
    assert run_of(engine, run_id).status == "running"
    assert engine.cancel(run_id, "sam") == "cancelled"
    assert children(engine, run_id)["charge"].status == "cancelled"
    assert engine.execute(run_id).follow_up == ()  # a cancelled workflow creates nothing more
    with pytest.raises(Conflict):  # a step that already ended stays as it ended
        engine.cancel(steps["welcome"].id, "sam")


def test_a_critical_step_waits_showing_the_rendered_request(engine: Engine) -> None:
    text = (ROOT / "workflows" / "pay_after_form.yaml").read_text()
    run_id = submit(engine, text, customer_email="neu@example.com", amount="12.50", customer="cus_77")
    drive(engine, run_id)
    charge = children(engine, run_id)["charge"]
    assert charge.status == "awaiting_approval" and charge.approvals_required == 2
    assert charge.document["payload"]["amount"] == "12.50" and charge.document["payload"]["customer"] == "cus_77"
    request = charge.approval_binding["request"]
    assert "cus_77" in str(request) and "1250" in str(request)


def test_every_step_id_template_and_rendered_payload_is_checked_at_submit() -> None:
    cases = {
        flow(mail("a", needs="nope")): ("steps[0].needs[0]", "no step 'nope'"),
        flow(mail("a", needs="b"), mail("b", needs="a")): ("steps", "cycle"),
        flow(mail("a"), mail("a")): ("steps[1].id", "second step"),
        flow(mail("a", text="{{ steps.b.output.text }}"), mail("b")): ("steps[0].payload.text", "not among"),
        flow(mail("a", text="{{ inputs.who }}")): ("steps[0].payload.text", "not an input"),
        flow(mail("a", text="{{ nope }}")): ("steps[0].payload.text", "'nope' is unknown"),
        flow(mail("a", to='"{{ inputs.x }}"'), inputs="  x: {default: no-address}\n"): ("steps[0].payload.to", "not an email"),
        flow("  - {id: r, goal: analyse, payload: {text: t}}\n", mail("a", needs="r", text="{{ steps.r.output.txt }}")):
            ("steps[1].payload.text", "did you mean 'text'"),
        flow(mail("a", text="{{ ''.__class__ }}")): ("steps[0].payload.text", "unsafe"),
        flow(mail("a", cond="inputs.x >")): ("steps[0].if", "condition syntax"),
        flow(mail("a"), inputs="  x: {type: integer}\n"): ("inputs.x", "is required"),
    }
    for text, (path, words) in cases.items():
        with pytest.raises(DocumentError) as caught:
            documents.load(text)
        found = [(p.path, p.message) for p in caught.value.problems]
        assert any(p == path and words in m for p, m in found), (text, found)
    with pytest.raises(DocumentError, match="only a workflow with steps"):
        documents.load((ROOT / "workflows" / "send_report.yaml").read_text(), inputs={"x": 1})


def test_an_earlier_steps_output_cannot_choose_where_a_mail_goes_unless_people_see_it() -> None:
    """Prompt injection: an engine's answer may carry instructions planted in what it read. It may
    fill a mail's text, never silently its recipient, sender or reply address."""
    research = "  - {id: r, goal: analyse, payload: {text: t}}\n"
    for field in ("to", "reply_to", "from"):
        text = flow(research, "  - id: m\n    goal: send_email\n    needs: [r]\n"
                              f"    payload: {{to: a@example.com, {field}: \"{{{{ steps.r.output.text }}}}\", subject: Hi, text: x}}\n"
                    .replace("to: a@example.com, to:", "to:"))
        with pytest.raises(DocumentError) as caught:
            documents.load(text)
        found = {p.path: p.message for p in caught.value.problems}
        assert "cannot choose where a mail goes" in found.get(f"steps[1].payload.{field}", ""), found
        reviewed = text.replace("    needs: [r]\n", "    needs: [r]\n    require_approval: true\n")
        with pytest.raises(DocumentError) as caught:  # the placeholder is no address: refused for that alone
            documents.load(reviewed)
        assert not any("cannot choose" in p.message for p in caught.value.problems), caught.value.problems
    # what the mail says may come from the engine; where it goes may come from the inputs
    documents.load(flow(research, "  - id: m\n    goal: send_email\n    needs: [r]\n    payload: {to: \"{{ inputs.who }}\","
                                  " subject: \"{{ steps.r.output.text | truncate(50) }}\", text: \"{{ steps.r.output.text }}\"}\n",
                   inputs="  who: {default: kunde@example.com}\n"))


@pytest.mark.parametrize("escape", [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ self._TemplateReference__context }}",
    "{{ lipsum.__globals__['os'].popen('id') }}",
    "{{ request.application.__globals__ }}",
    "{% include '/etc/passwd' %}",
    "{% import 'os' as os %}",
    "{% extends '/etc/passwd' %}",
    "{{ ''|attr('__class__') }}",
    "{{ 'a' * 100000 * 100000 }}",
    "{{ ('x' * 9000) * 9000 }}",
    "{{ 'a'.center(1000000000) }}",
    "{{ 'a'|center(1000000000) }}",
    "{{ '%0999999999d' % 1 }}",
    "{{ 9 ** 9 ** 9 }}",
    "{% for i in inputs.x %}{% for j in inputs.x %}{% endfor %}{% endfor %}",
    "{{ '{0.__class__}'.format(1) }}",
    "{% set x = inputs.__class__ %}",
])
def test_templates_cannot_escape_the_sandbox(escape: str) -> None:
    text = flow(mail("a", text=escape.replace('"', "'")), inputs="  x: {default: abc}\n")
    with pytest.raises(DocumentError) as caught:
        documents.load(text)
    assert caught.value.problems[0].path == "steps[0].payload.text"
