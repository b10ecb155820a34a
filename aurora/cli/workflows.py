"""Workflows: validate, submit, status, list, cancel, approvals, route."""

from __future__ import annotations

import json
import shlex
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..client import unreachable_words
from ..errors import AuroraError, ClientError
from ._common import EXIT_HELP, EXIT_PENDING, FINAL, _client, _fail, exit_code, main, mode_label, run_segment
from ._documents import print_problems
from ._output import ago, emit, json_wanted, mode_text, print_json, short_id, status_text, table
from ._runs import headline, print_status, progress_line

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
    """Check workflow files locally, without a server: every problem with its line and column (a
    workflow with inputs: needs its --input values)."""
    from .. import documents

    given = _parse_inputs(inputs)
    report = []
    for path in files:
        try:
            body = path.read_bytes()
            workflow = documents.load(body, fmt="json" if path.suffix == ".json" else "yaml", inputs=given)
            report.append({"file": str(path), "ok": True, "goal": workflow.goal, "name": workflow.name})
        except OSError as exc:
            report.append({"file": str(path), "ok": False, "problems": [{"path": "", "message": f"cannot read: {exc.strerror}"}]})
        except AuroraError as exc:
            problems = [p.as_dict() for p in getattr(exc, "problems", [])] or [{"path": "", "message": str(exc)}]
            report.append({"file": str(path), "ok": False, "problems": problems})
    if json_wanted():
        print_json(report)
    for entry in report if not json_wanted() else []:
        if entry["ok"]:
            click.echo(f"{entry['file']}: ok ({entry['goal']}, {entry['name']})")
        else:
            print_problems(entry["file"], entry["problems"])
    sys.exit(1 if any(not e["ok"] for e in report) else 0)


def wait_for_run(client: Any, run_id: str, timeout: float, show: Callable[[str], None]) -> tuple[dict[str, Any], bool]:
    """Follow a run until it ends, waits for approval or is blocked; ``show`` gets a line for each
    new state. Returns the last state and whether it got there within ``timeout`` seconds. The one
    place that knows how the CLI waits: the run's event stream (``Client.wait``), nothing polled."""
    deadline = time.monotonic() + timeout
    last = ""
    unreachable: list[Exception] = []  # since the last answer

    def seen(run: dict[str, Any]) -> None:
        nonlocal last
        unreachable.clear()
        line = progress_line(run)
        if line != last:
            show(line)
            last = line

    def lost(exc: Exception) -> None:
        nonlocal last
        unreachable.append(exc)
        line = f"{short_id(run_id)}: connection lost ({unreachable_words(exc)}); trying again"
        if line != last:
            show(line)
            last = line

    def settled(run: dict[str, Any]) -> bool:
        return run["status"] in FINAL or run["status"] == "awaiting_approval" or bool(run.get("blocked"))

    while True:
        try:
            run = client.wait(run_id, max(deadline - time.monotonic(), 0.1), settled, seen, lost)
            if not settled(run) and unreachable:
                raise ClientError(f"cannot reach Aurora at {client.url}: {unreachable_words(unreachable[-1])}")
            return run, settled(run)
        except ClientError as exc:
            if exc.status is not None and exc.status < 500:
                raise
            # The run goes on without us: a lost connection says nothing about it. Follow it
            # again when Aurora answers; give up only at the deadline, as "not known yet" (7).
            if time.monotonic() > deadline:
                show("")
                _fail(f"lost the connection to Aurora while following run {run_id} ({exc}); it was submitted "
                      f"and may still run or have finished: check it with: aurora status {run_id}",
                      EXIT_PENDING)
            line = f"{short_id(run_id)}: connection lost ({exc}); trying again"
            if line != last:
                show(line)
                last = line
            time.sleep(1.0)


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
    try:
        # One key for this invocation: a try repeated after a reset connection finds the same run.
        run = client.post("/workflows", data=body,
                          headers={"Content-Type": content_type, "Idempotency-Key": str(uuid.uuid4())})
    except ClientError as exc:
        if not exc.body.get("errors"):
            raise
        print_problems(file, exc.body["errors"], "the server refused it")
        sys.exit(2)
    if not wait:
        emit(run, lambda: click.echo(f"submitted {short_id(run['id'])} {run['name']} ({run['goal']}): {run['status']}"
                                     f"\n  follow it: aurora status {short_id(run['id'])}"))
        return
    interactive = sys.stderr.isatty()

    def show(line: str) -> None:
        # on a terminal one line rewritten in place; elsewhere (logs, CI) one line per change;
        # "" ends the line on a terminal before a message
        if not line:
            if interactive:
                click.echo(err=True)
            return
        click.echo(("\r\033[K" if interactive else "") + line, nl=not interactive, err=True)

    run, done = wait_for_run(client, run["id"], timeout, show)
    if interactive:
        click.echo(err=True)  # end the progress line before anything else is printed
    if not done:
        _fail(f"still {run['status']} after {timeout:.0f} s; follow it with: aurora status {short_id(run['id'])}",
              EXIT_PENDING)
    click.echo(headline(run, err=True), err=True)
    emit({k: run.get(k) for k in ("id", "name", "goal", "status", "mode", "mode_reason", "blocked", "result", "error")},
         lambda: print_status(run, client.url, timeline=False))
    sys.exit(exit_code(run))


@main.command()
@click.argument("run_id")
@click.option("--from", "from_step", default=None, metavar="STEP",
              help="Run this step and every step after it again (default: what did not succeed).")
def rerun(run_id: str, from_step: str | None) -> None:
    """Run a workflow of several steps again: the steps that succeeded are reused, never done twice
    (a step that acted live is never run again)."""
    run = _client().post(f"/workflows/{run_segment(run_id)}/rerun", params={"from": from_step} if from_step else None)
    emit(run, lambda: click.echo(f"rerun of {short_id(run['rerun_of'])}: {short_id(run['id'])} {run['name']}: "
                                 f"{run['status']}\n  follow it: aurora status {short_id(run['id'])}"))


@main.command()
@click.argument("run_id")
def status(run_id: str) -> None:
    """Show one run: what it does, its status, LIVE or SIMULATED and why, approvals, result, its
    steps and timeline. RUN_ID may be the first 6 or more characters of the id."""
    client = _client()
    run = client.get(f"/workflows/{run_segment(run_id)}")
    if run.get("archive"):
        click.echo(f"pruned: its document, steps and events are archived in {run['archive']}", err=True)
    if json_wanted():
        click.echo(headline(run, err=True), err=True)
        for line in steps_lines(run):
            click.echo(line, err=True)
        print_json(run)
        return
    print_status(run, client.url, steps=steps_lines(run))


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

    def human() -> None:
        table(["ID", "STATUS", "MODE", "GOAL", "NAME", "CREATED"],
              [[short_id(r["id"]), status_text(r["status"]), mode_text(mode_label(r)), r["goal"], r["name"],
                ago(r["created_at"])] for r in page["runs"]], empty="no runs")
        if page.get("next_cursor"):
            # the same filters, or the next page would be of other runs
            given = [("--status", status_), ("--goal", goal), ("--name", name), ("--limit", limit if limit != 20 else None)]
            flags = "".join(f" {flag} {shlex.quote(str(value))}" for flag, value in given if value is not None)
            click.echo(f"more: aurora list{flags} --cursor {page['next_cursor']}")

    emit(page, human)


@main.command()
def approvals() -> None:
    """List the runs waiting for your approval: what each would send, live or simulated and why."""
    waiting = _client().get("/approvals")["waiting"]
    if json_wanted():
        print_json(waiting)
        return
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
        click.echo(f"    {mode_text('LIVE' if approval['live'] else 'SIMULATED')}: {approval['reason']}")
        for row in approval["plain"]:
            click.echo(f"    {row['label']}: {row['value']}")
        click.echo("    the exact request (credentials redacted):")
        for line in json.dumps(approval["request"], indent=2, ensure_ascii=False).splitlines():
            click.echo(f"      {line}")
        click.echo(f"    vote on exactly this: aurora approve {run['id']} --request {approval['hash']}")


def _vote(run_id: str, decision: str, message: str | None, request: str | None) -> None:
    segment = run_segment(run_id)
    client = _client()
    if not request:
        # No hash given: show what the run would send now and ask (a vote always names the
        # rendering its voter saw; the server refuses one that names none).
        run = client.get(f"/workflows/{segment}")
        approval = run.get("approval")
        if approval is None:
            _fail(f"{run_id} shows nothing to vote on (it is {run['status']})", 2)
        click.echo(f"{run_id}: {'LIVE' if approval['live'] else 'SIMULATED'}: {approval['reason']}", err=True)
        for row in approval["plain"]:
            click.echo(f"    {row['label']}: {row['value']}", err=True)
        if not click.confirm(f"{decision.capitalize()} exactly this?", err=True):
            _fail("nothing was recorded", 1)
        request = approval["hash"]
    body: dict[str, str] = {"request_hash": request}
    if message:
        body["comment"] = message
    result = client.post(f"/workflows/{segment}/{decision}", json=body, headers={"X-Aurora-Channel": "cli"})
    gate = result["gate"]
    emit(result, lambda: click.echo(f"{run_id}: {status_text(result['status'])} "
                                    f"({gate['received']} of {gate['required']} approvals)"))


REQUEST_HELP = ("The request hash `aurora approvals` showed (refused, 409, if the request or its mode changed "
                "since). Without it, the run's current request is shown and you are asked to confirm.")


@main.command()
@click.argument("run_id")
@click.option("-m", "--message", default=None, help="A comment for the ledger.")
@click.option("--request", default=None, metavar="HASH", help=REQUEST_HELP)
def approve(run_id: str, message: str | None, request: str | None) -> None:
    """Approve a waiting run (RUN_ID: 6 or more characters of its id)."""
    _vote(run_id, "approve", message, request)


@main.command()
@click.argument("run_id")
@click.option("-m", "--message", default=None, help="A comment for the ledger.")
@click.option("--request", default=None, metavar="HASH", help=REQUEST_HELP)
def reject(run_id: str, message: str | None, request: str | None) -> None:
    """Reject a waiting run (one rejection ends it)."""
    _vote(run_id, "reject", message, request)


@main.command()
@click.argument("run_id")
def cancel(run_id: str) -> None:
    """Cancel a run that has not begun its action."""
    result = _client().post(f"/workflows/{run_segment(run_id)}/cancel")
    emit(result, lambda: click.echo(f"{short_id(result['id'])}: {status_text(result['status'])}"))


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
    from ..config import load_settings
    from ..policy import PolicyStore
    from ..router import Rules, route
    from ._home import cli_environment

    # Only the policy's rules: no database (a routing question needs no stack, nor records a reload).
    policy = PolicyStore(load_settings(cli_environment()[0]).policy_file).current()
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
