"""Workflows of several steps through the real stack: the CLI with --input, steps on two worker
processes at once, and a worker SIGKILLed in the middle of a three-step workflow."""

from __future__ import annotations

import time
from datetime import datetime

from conftest import ROOT, free_port

THREE_STEPS = """name: three
inputs:
  customer_email: {type: string, format: email}
steps:
  - {id: research, goal: analyse, payload: {text: "Recherchiere aktuelle Studien über Hufrehe"}}
  - id: report
    goal: send_email
    needs: [research]
    payload: {to: "{{ inputs.customer_email }}", subject: Bericht, text: "{{ steps.research.output.text }}"}
  - id: done
    goal: send_email
    needs: [report]
    payload: {to: "{{ inputs.customer_email }}", subject: Fertig, text: "Der Bericht ist unterwegs."}
"""

PARALLEL = """name: parallel
steps:
  - {id: left, goal: send_email, payload: {to: a@example.com, subject: L, text: l}}
  - {id: right, goal: send_email, payload: {to: b@example.com, subject: R, text: r}}
  - {id: join, goal: send_email, needs: [left, right], payload: {to: c@example.com, subject: J, text: j}}
"""


def start(make_stack, workers: int, **env: str):
    stack = make_stack(AURORA_LEASE_SECONDS="2", **env)
    stack.port = free_port()
    stack.aurora("db", "upgrade")
    for name, role in (("admin", "admin"), ("sam", "submitter")):
        stack.keys[name] = stack.aurora("keys", "create", name, "--role", role).stdout.strip()
    stack.start("web", "serve", "--port", str(stack.port), "--workers", "1")
    for n in range(workers):
        stack.start(f"worker{n}", "worker", "-c", "1")
    stack.start("system", "worker", "--system", "--beat")
    stack.wait_healthy()
    return stack


def steps_of(stack, run_id: str) -> dict[str, dict]:
    return {s["id"]: s for s in stack.http("GET", f"/workflows/{run_id}").json()["flow"]["steps"]}


def test_the_cli_submits_a_workflow_with_inputs_and_waits_for_all_its_steps(make_stack, tmp_path) -> None:
    stack = start(make_stack, 1)
    path = ROOT / "workflows" / "research_report.yaml"
    cli_env = {**stack.env, "AURORA_URL": stack.url, "AURORA_TOKEN": stack.keys["sam"]}
    done = stack.aurora("submit", str(path), "--input", "customer_email=kunde@example.com", "--wait",
                        env=cli_env, check=False)
    assert done.returncode == 5, done.stderr  # a simulated success, as for any run
    assert "SUCCEEDED" in done.stderr
    [run] = stack.http("GET", "/workflows", params={"goal": "workflow"}).json()["runs"]
    steps = steps_of(stack, run["id"])
    assert [steps[s]["status"] for s in ("research", "report")] == ["succeeded", "succeeded"]
    assert steps["report"]["output"]["to"] == ["kunde@example.com"] and steps["report"]["mode"] == "simulated"
    shown = stack.aurora("status", run["id"][:8], env=cli_env).stdout  # the steps are part of the summary
    assert "research" in shown and "report" in shown and "needs research" in shown
    missing = stack.aurora("submit", str(path), env=cli_env, check=False)
    assert missing.returncode != 0 and "inputs.customer_email" in missing.stderr and "Traceback" not in missing.stderr


def test_independent_steps_run_on_two_workers_at_once(make_stack) -> None:
    stack = start(make_stack, 2, AURORA_SIMULATED_LATENCY_MS="1500")
    run_id = stack.http("POST", "/workflows", key="sam", data=PARALLEL,
                        headers={"Content-Type": "application/yaml"}).json()["id"]
    run = stack.wait_status(run_id, {"succeeded", "failed"}, timeout=60)
    assert run["status"] == "succeeded", run["error"]
    steps = steps_of(stack, run_id)
    left, right = (stack.http("GET", f"/workflows/{steps[s]['run']}").json() for s in ("left", "right"))
    spans = [(datetime.fromisoformat(r["started_at"]), datetime.fromisoformat(r["finished_at"])) for r in (left, right)]
    assert spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1], "the two steps overlapped in time"
    workers = {e["data"]["worker"] for r in (left, right) for e in r["timeline"] if e["type"] == "run.running"}
    assert len(workers) == 2


def test_a_worker_killed_in_the_middle_of_a_three_step_workflow_leaves_each_step_done_once(make_stack) -> None:
    stack = start(make_stack, 1, AURORA_SIMULATED_LATENCY_MS="3000")
    body = {"document": THREE_STEPS, "inputs": {"customer_email": "kunde@example.com"}}
    run_id = stack.http("POST", "/workflows", key="sam", json=body).json()["id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and steps_of(stack, run_id)["report"]["status"] != "running":
        time.sleep(0.1)
    assert steps_of(stack, run_id)["report"]["status"] == "running"
    stack.kill("worker0")  # in the middle of the second step
    stack.start("worker1", "worker", "-c", "1")
    run = stack.wait_status(run_id, {"succeeded", "failed"}, timeout=90)
    assert run["status"] == "succeeded", run["error"]
    steps = steps_of(stack, run_id)
    assert {s["status"] for s in steps.values()} == {"succeeded"}
    assert all(s["attempt"] == 1 for s in steps.values())  # no step was started twice
    kinds = [e["type"] for e in run["timeline"]]
    assert kinds.count("step.started") == 3 and kinds.count("step.succeeded") == 3
    report = stack.http("GET", f"/workflows/{steps['report']['run']}").json()
    acts = [s for s in report["steps"] if s["step"] == "act"]
    assert len(acts) == 1 and report["attempts"] == 2  # taken over by the second worker, acted once


def test_the_page_shows_the_steps_and_which_one_waits_for_whose_vote(make_stack) -> None:
    from playwright.sync_api import sync_playwright
    from test_web_ui import ARGS, CHROMIUM
    from test_web_ui import browser as _browser  # noqa: F401 - the same Chromium as the page's own tests

    stack = make_stack()
    stack.port = free_port()
    stack.aurora("db", "upgrade")
    for name, role in (("admin", "admin"), ("sam", "submitter"), ("alice", "approver")):
        stack.keys[name] = stack.aurora("keys", "create", name, "--role", role).stdout.strip()
    stack.start("web", "serve", "--port", str(stack.port), "--workers", "1")
    stack.start("worker", "worker", "-c", "1")
    stack.wait_healthy()
    body = {"document": (ROOT / "workflows" / "pay_after_form.yaml").read_text(),
            "inputs": {"customer_email": "neu@example.com", "amount": "12.50", "customer": "cus_77"}}
    run_id = stack.http("POST", "/workflows", key="sam", json=body).json()["id"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and steps_of(stack, run_id)["charge"]["status"] != "awaiting_approval":
        time.sleep(0.1)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = chromium.new_context().new_page()
        page.goto(stack.url + "/ui/")
        page.fill("#key", stack.keys["alice"])
        page.click("button[type=submit]")
        page.goto(f"{stack.url}/ui/runs/{run_id}")
        rows = page.locator("#steps tbody tr")
        assert rows.count() == 2, page.content()[-3000:]
        assert "succeeded" in rows.nth(0).inner_text() and "SIMULATED" in rows.nth(0).inner_text()
        waiting = rows.nth(1).inner_text()
        assert "awaiting approval" in waiting and "welcome" in waiting  # what it needs
        page.click("#steps a.vote-link")
        assert "12.50" in page.content() and "cus_77" in page.content()  # the rendered request
        assert "pay_after_form" in page.locator("#part-of").inner_text()
        chromium.close()
