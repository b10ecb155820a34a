"""Workflows: validate, submit, status, list, cancel, approvals, route."""

from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import click

from ..errors import AuroraError
from ._common import EXIT_HELP, EXIT_PENDING, FINAL, _client, _fail, _print, _runtime, exit_code, main, mode_label

# -- workflows --------------------------------------------------------------------------------

def _parse_inputs(pairs: tuple[str, ...]) -> dict[str, str] | None:
    """``--input name=value`` pairs (values are text; the server converts them by the declared type)."""
    if not pairs:
        return None
    inputs: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise click.BadParameter(f"{pair!r}: give it as name=value", param_hint="--input")
        if name.strip() in inputs:  # which one was meant? not silently the last
            raise click.BadParameter(f"{name.strip()!r} is given twice", param_hint="--input")
        inputs[name.strip()] = value
    return inputs


INPUT_OPTION = click.option("--input", "inputs", multiple=True, metavar="NAME=VALUE",
                            help="A value for one of the workflow's inputs: (repeat for each).")


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@INPUT_OPTION
def validate(files: tuple[Path, ...], inputs: tuple[str, ...]) -> None:
    """Check workflow files locally, without a server (a workflow with inputs: needs its --input values)."""
    from .. import documents

    given = _parse_inputs(inputs)
    bad = 0
    for path in files:
        try:
            body = path.read_bytes()
            workflow = documents.load(body, fmt="json" if path.suffix == ".json" else "yaml", inputs=given)
            click.echo(f"{path}: ok ({workflow.goal}, {workflow.name})")
        except OSError as exc:
            bad += 1
            click.echo(f"{path}: cannot read: {exc.strerror}", err=True)
        except AuroraError as exc:
            bad += 1
            for problem in getattr(exc, "problems", []) or [exc]:
                click.echo(f"{path}: {problem}", err=True)
    sys.exit(1 if bad else 0)


def _progress_line(run: dict[str, Any]) -> str:
    line = f"{run['id'][:8]} {run['name']}: {run['status']}"
    if run.get("mode"):
        line += f" {mode_label(run)}"
    if run.get("step"):
        line += f" (step {run['step']})"
    if run["status"] == "awaiting_approval":
        approvals = run.get("approvals", {})
        line += f", {len(approvals.get('votes', []))}/{approvals.get('required')} approvals"
    if run.get("blocked"):
        line += f" BLOCKED ({run['blocked']['component']}): {run['blocked']['message']}"
    return line


def _headline(run: dict[str, Any]) -> str:
    """One line that cannot be misread: what happened, live or simulated, and why."""
    line = f"{run['status'].upper()} {mode_label(run)}"
    if run.get("mode_reason"):
        line += f": {run['mode_reason']}"
    if run.get("blocked"):
        line += f": {run['blocked']['message']} ({run['blocked']['what_to_do']})"
    elif (run.get("error") or {}).get("what_to_do"):
        line += f" ({run['error']['what_to_do']})"
    return line


@main.command(epilog=EXIT_HELP)
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--wait", is_flag=True, help="Follow the run until it ends (or waits for approval, or is blocked).")
@click.option("--timeout", default=300.0, show_default=True, help="Seconds to wait at most.")
@INPUT_OPTION
def submit(file: Path, wait: bool, timeout: float, inputs: tuple[str, ...]) -> None:
    """Submit a workflow file; with --wait, follow it, print the result and exit with its status
    (below): a simulated success is not 0."""
    given = _parse_inputs(inputs)
    try:
        body = file.read_bytes()
    except OSError as exc:
        _fail(f"{file}: cannot read: {exc.strerror}", 2)
    content_type = "application/json" if file.suffix == ".json" else "application/yaml"
    if given is not None:  # the inputs go beside the document, which keeps its text (and line numbers)
        try:
            body = json.dumps({"document": body.decode("utf-8-sig"), "inputs": given}).encode()
        except UnicodeDecodeError:
            _fail(f"{file}: not UTF-8 text", 2)
        content_type = "application/json"
    client = _client()
    # One key for this invocation: a try repeated after a reset connection finds the same run.
    run = client.post("/workflows", data=body,
                      headers={"Content-Type": content_type, "Idempotency-Key": str(uuid.uuid4())})
    if not wait:
        _print(run)
        return
    deadline = time.monotonic() + timeout
    interactive = sys.stderr.isatty()
    last = ""
    while True:
        run = client.get(f"/workflows/{run['id']}")
        line = _progress_line(run)
        if line != last:
            click.echo(("\r\033[K" if interactive else "") + line, nl=not interactive, err=True)
            last = line
        if run["status"] in FINAL or run["status"] == "awaiting_approval" or run.get("blocked"):
            break
        if time.monotonic() > deadline:
            _fail(f"still {run['status']} after {timeout:.0f} s; follow it with: aurora status {run['id']}", EXIT_PENDING)
        time.sleep(0.25)
    if interactive:
        click.echo(err=True)
    click.echo(_headline(run), err=True)
    _print({k: run.get(k) for k in ("id", "name", "goal", "status", "mode", "mode_reason", "blocked", "result", "error")})
    sys.exit(exit_code(run))


@main.command()
@click.argument("run_id")
@click.option("--from", "from_step", default=None, metavar="STEP",
              help="Run this step and every step after it again (default: what did not succeed).")
def rerun(run_id: str, from_step: str | None) -> None:
    """Run a workflow of several steps again: the steps that succeeded are reused, never done twice
    (a step that acted live is never run again)."""
    run = _client().post(f"/workflows/{run_id}/rerun", params={"from": from_step} if from_step else None)
    _print(run)


@main.command()
@click.argument("run_id")
def status(run_id: str) -> None:
    """Show one run: a headline (status, LIVE or SIMULATED, why), then document, result and timeline."""
    run = _client().get(f"/workflows/{run_id}")
    click.echo(_headline(run), err=True)
    for line in steps_lines(run):
        click.echo(line, err=True)
    _print(run)


def steps_lines(run: dict[str, Any]) -> list[str]:
    """A workflow's steps, one line each, in their order: status, mode, what it needs."""
    steps = (run.get("flow") or {}).get("steps") or []
    width = max((len(s["id"]) for s in steps), default=0)
    lines = []
    for step in steps:
        line = f"  {step['id']:<{width}}  {step['status']:<18} {(step.get('mode') or '').upper():<9}"
        if step["needs"]:
            line += f" needs {', '.join(step['needs'])}"
        if step["status"] == "awaiting_approval":
            line += f"  -> aurora approve {step['run']}"
        elif step.get("reason") and step["status"] in ("failed", "skipped"):
            line += f"  ({step['reason'][:80]})"
        lines.append(line.rstrip())
    return (["steps:"] + lines) if lines else []


@main.command("list")
@click.option("--status", "status_", default=None, help="Only runs in this status.")
@click.option("--goal", default=None)
@click.option("--name", default=None)
@click.option("--limit", default=20, show_default=True)
@click.option("--cursor", default=None, help="Continue after a previous page.")
def list_runs(status_: str | None, goal: str | None, name: str | None, limit: int, cursor: str | None) -> None:
    """List runs, newest first."""
    page = _client().get("/workflows", status=status_, goal=goal, name=name, limit=limit, cursor=cursor)
    for run in page["runs"]:
        click.echo(f"{run['id']}  {run['status']:<20} {mode_label(run):<9} {run['goal']:<14} {run['name']}  "
                   f"{run['created_at']}")
    if page.get("next_cursor"):
        click.echo(f"more: aurora list --cursor {page['next_cursor']}")


@main.command()
def approvals() -> None:
    """List the runs waiting for your approval: what each would send, live or simulated and why."""
    waiting = _client().get("/approvals")["waiting"]
    if not waiting:
        click.echo("nothing waits for you")
    for run in waiting:
        click.echo(f"{run['id']}  {run['goal']:<14} {run['name']:<24} {run['received']}/{run['required']} approvals"
                   f"  by {run.get('submitted_by_person') or run['submitted_by']}  until {run['deadline']}")
        approval = run.get("approval")
        if approval is None:
            click.echo(f"    {json.dumps(run['payload'], ensure_ascii=False)}")
            continue
        # what the vote approves: live or simulated and why, in plain words, then the exact request
        click.echo(f"    {'LIVE' if approval['live'] else 'SIMULATED'}: {approval['reason']}")
        for row in approval["plain"]:
            click.echo(f"    {row['label']}: {row['value']}")
        click.echo("    the exact request (credentials redacted):")
        for line in json.dumps(approval["request"], indent=2, ensure_ascii=False).splitlines():
            click.echo(f"      {line}")
        click.echo(f"    vote on exactly this: aurora approve {run['id']} --request {approval['hash']}")


def _vote(run_id: str, decision: str, message: str | None, request: str | None) -> None:
    body: dict[str, str] = {"comment": message} if message else {}
    if request:
        body["request_hash"] = request
    result = _client().post(f"/workflows/{run_id}/{decision}", json=body, headers={"X-Aurora-Channel": "cli"})
    gate = result["gate"]
    click.echo(f"{run_id}: {result['status']} ({gate['received']}/{gate['required']} approvals)")


@main.command()
@click.argument("run_id")
@click.option("-m", "--message", default=None, help="A comment for the ledger.")
@click.option("--request", default=None, metavar="HASH",
              help="The request hash `aurora approvals` showed: refused (409) if the request changed since.")
def approve(run_id: str, message: str | None, request: str | None) -> None:
    """Approve a waiting run."""
    _vote(run_id, "approve", message, request)


@main.command()
@click.argument("run_id")
@click.option("-m", "--message", default=None, help="A comment for the ledger.")
@click.option("--request", default=None, metavar="HASH",
              help="The request hash `aurora approvals` showed: refused (409) if the request changed since.")
def reject(run_id: str, message: str | None, request: str | None) -> None:
    """Reject a waiting run (one rejection ends it)."""
    _vote(run_id, "reject", message, request)


@main.command()
@click.argument("run_id")
def cancel(run_id: str) -> None:
    """Cancel a run that has not begun its action."""
    _print(_client().post(f"/workflows/{run_id}/cancel"))


@main.command("route")
@click.option("--json", "as_json", is_flag=True, help="Print each decision as one line of JSON.")
@click.argument("texts", nargs=-1, required=True)
def route_cmd(as_json: bool, texts: tuple[str, ...]) -> None:
    """Show which AI engine each TEXT goes to, with the rules of the policy in force.

    \b
    aurora route "Recherchiere Studien zu PBM"       engine and text
    aurora route --json TEXT...                       one JSON decision per text
    aurora route --json -                             one text per line from stdin
    aurora route eval FILE.jsonl                      accuracy, confusion matrix, mistakes
                                                      (lines of {"text": ..., "target": ...})
    """
    from ..router import Rules, route

    policy = _runtime().policies.current()
    rules = Rules.from_policy(policy.routing, policy.version)
    if texts[0] == "eval":
        _route_eval(rules, texts[1:], as_json)
        return
    lines = (line.rstrip("\n") for line in sys.stdin) if texts == ("-",) else iter(texts)
    for text in lines:
        if not text.strip():
            continue
        decision = route(text, rules)
        click.echo(json.dumps(decision.as_dict(), ensure_ascii=False) if as_json else f"{decision.target}\t{text}")


def _route_eval(rules: Any, files: tuple[str, ...], as_json: bool) -> None:
    from ..route_eval import evaluate, load_labelled

    if len(files) != 1:
        _fail("usage: aurora route eval FILE.jsonl", 2)
    path = Path(files[0])
    if not path.is_file():
        _fail(f"{path}: no such file", 2)
    report = evaluate(rules, load_labelled(path))
    click.echo(json.dumps(report.as_dict(), ensure_ascii=False, indent=2) if as_json else report.render())
