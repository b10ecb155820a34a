"""The ``aurora`` command."""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC
from pathlib import Path
from typing import Any

import click

from . import __version__
from .errors import AuroraError, ClientError

FINAL = {"succeeded", "failed", "rejected", "expired", "cancelled"}
EXIT_CODES = {"succeeded": 0, "awaiting_approval": 3}


def _runtime() -> Any:
    from .runtime import get_runtime

    return get_runtime()


def _client() -> Any:
    from .client import Client

    return Client.from_environment()


def _print(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def _fail(message: str, code: int = 1) -> None:
    click.echo(f"aurora: {message}", err=True)
    sys.exit(code)


class AuroraGroup(click.Group):
    """Turns Aurora's own errors into one clear line and an exit status, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ClientError as exc:
            detail = "".join(f"\n  {e['path'] or '(document)'}: {e['message']}" for e in exc.body.get("errors", []))
            _fail(f"{exc}{detail}", 2 if exc.status and exc.status < 500 else 1)
        except AuroraError as exc:
            _fail(str(exc), 2)


@click.group(cls=AuroraGroup)
@click.version_option(__version__, prog_name="aurora")
def main() -> None:
    """Aurora: submit, run and watch workflows, safely (dry run unless everything says live).

    The CLI talks to the server at AURORA_URL with the key in AURORA_TOKEN, or the config file
    that `aurora up` writes. Server-side commands (up, serve, worker, beat, keys, db) read
    AURORA_DATABASE_URL, AURORA_BROKER_URL and the other AURORA_* settings.
    """


# -- running the stack -------------------------------------------------------------------------

@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", "ports", multiple=True, type=int, default=[9292, 9195], show_default=True,
              help="Port to listen on (repeat for several; the seed uses 9292 and 9195).")
@click.option("--web-workers", default=1, show_default=True, help="gunicorn worker processes (8 threads each).")
def up(host: str, ports: tuple[int, ...], web_workers: int) -> None:
    """Migrate the database and start web, worker and beat; Ctrl-C stops all of them."""
    import subprocess

    from .config import load_settings
    from .stack import gunicorn_command, run_stack

    settings = load_settings()
    url = f"http://{host}:{ports[0]}"
    from .metrics import prepare

    prepare(settings.home, clear=True)  # counters start afresh with the stack; children share the folder
    # Migrations and the first key run in a child, so this supervisor stays small while it waits.
    prepared = subprocess.run([sys.executable, "-m", "aurora", "bootstrap", "--url", url],
                              stdout=subprocess.PIPE, text=True)
    if prepared.returncode:
        sys.exit(prepared.returncode)
    key = prepared.stdout.strip()
    if key:
        click.echo("Aurora's first admin API key (shown once; also saved for this user's CLI):")
        click.echo(f"  {key}")
        click.echo(f"  export AURORA_URL={url} AURORA_TOKEN={key}")
    click.echo(f"Aurora {__version__}: node {settings.node_name}, listening on "
               + ", ".join(f"http://{host}:{p}" for p in ports))
    click.echo(f"  database {settings.database_url.split('@')[-1]}, broker {settings.broker_url.split('@')[-1]}")
    python = sys.executable
    code = run_stack({
        "web": gunicorn_command([f"{host}:{p}" for p in ports], web_workers, threads=8),
        "worker": [python, "-m", "aurora", "worker"],
        "beat": [python, "-m", "aurora", "beat"],
    })
    sys.exit(code)


@main.command()
@click.option("--url", default="http://127.0.0.1:9292", show_default=True, help="URL the CLI should use.")
def bootstrap(url: str) -> None:
    """Migrate the database; on first start make an admin key, save it for the CLI and print it."""
    from .stack import prepare

    runtime = _runtime()
    runtime.policies.current()
    key = prepare(runtime.settings, url)
    if key:
        click.echo(key)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=9292, show_default=True, type=int)
@click.option("--workers", default=2, show_default=True, help="gunicorn worker processes.")
def serve(host: str, port: int, workers: int) -> None:
    """Run only the web API (gunicorn) on one port."""
    import os

    from .stack import gunicorn_command

    _runtime().policies.current()
    command = gunicorn_command([f"{host}:{port}"], workers)
    os.execv(command[0], command)


@main.command()
@click.option("--concurrency", "-c", type=int, default=None, help="Worker processes (default AURORA_WORKER_CONCURRENCY).")
@click.option("--loglevel", "-l", default="info", show_default=True)
def worker(concurrency: int | None, loglevel: str) -> None:
    """Run a Celery worker that executes runs."""
    import socket

    from .celery_app import QUEUE, celery

    runtime = _runtime()
    runtime.policies.current()
    count = concurrency or runtime.settings.worker_concurrency
    celery.worker_main(["worker", "-Q", QUEUE, "-c", str(count), "-l", loglevel, "--without-mingle",
                        "--without-gossip", "-n", f"aurora-{socket.gethostname()}-{__import__('os').getpid()}@%h"])


@main.command()
@click.option("--loglevel", "-l", default="info", show_default=True)
def beat(loglevel: str) -> None:
    """Run Celery beat: the sweeper that recovers stuck runs and expires overdue gates."""
    from .celery_app import celery

    settings = _runtime().settings
    settings.home.mkdir(parents=True, exist_ok=True)
    celery.start(["beat", "-l", loglevel, "-s", str(settings.home / "celerybeat-schedule")])


@main.group()
def db() -> None:
    """Database schema commands."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Apply the Alembic migrations (aurora up does this too)."""
    from .migrations import current, upgrade

    url = _runtime().settings.database_url
    upgrade(url, revision)
    click.echo(f"database at revision {current(url)}")


# -- keys -------------------------------------------------------------------------------------

@main.group()
def keys() -> None:
    """API keys (run on the server; they go straight to the database)."""


@keys.command("create")
@click.argument("name")
@click.option("--role", type=click.Choice(["admin", "submitter", "approver", "viewer"]), required=True)
def keys_create(name: str, role: str) -> None:
    """Make a key; prints the key alone on stdout (it is never shown again)."""
    from . import keys as key_store
    from .models import Role

    click.echo(key_store.create(_runtime().db, name, Role(role)))


@keys.command("list")
def keys_list() -> None:
    """Show every key's name, role and state (never the key)."""
    from . import keys as key_store

    for row in key_store.listing(_runtime().db):
        state = f"revoked {row['revoked_at']}" if row["revoked_at"] else "active"
        click.echo(f"{row['name']:<24} {row['role']:<10} {row['key_id']}  {state}")


@keys.command("revoke")
@click.argument("name")
def keys_revoke(name: str) -> None:
    """Revoke a key at once."""
    from . import keys as key_store

    key_store.revoke(_runtime().db, name)
    click.echo(f"revoked {name}")


# -- adapters ---------------------------------------------------------------------------------

@main.group()
def adapters() -> None:
    """Adapter rollout: status, self-test, promote past the canary, re-enable after a rollback."""


def _adapter_name(name: str) -> str:
    from .adapter_state import ADAPTERS

    if name not in ADAPTERS:
        _fail(f"unknown adapter {name!r}; one of: {', '.join(ADAPTERS)}", 2)
    return name


@adapters.command("status")
def adapters_status() -> None:
    """Each adapter's mode for a new run now, and why."""
    from dataclasses import replace

    from . import adapter_state
    from .adapters import BY_NAME
    from .adapters.context import default_context
    from .adapters.selftest import SAMPLES, canary_probe_id

    runtime = _runtime()
    rollouts = adapter_state.load(runtime.db)
    ctx = replace(default_context(), rollouts=rollouts)
    for name, adapter in BY_NAME.items():
        configured = adapter.credentials_configured(SAMPLES[name], ctx.secrets)
        inside = adapter.decide(SAMPLES[name], replace(ctx, run_id=canary_probe_id()))
        rollout = rollouts[name]
        stage = "rolled back" if rollout.rolled_back else ("promoted" if rollout.promoted else "canary")
        mode = "live" if inside.live and stage == "promoted" else (
            f"live for {runtime.policies.current().canary_percent}% of runs" if inside.live else "simulated")
        click.echo(f"{name:<9} {mode:<22} {stage:<11} {'configured' if configured else 'not configured':<15} "
                   f"{inside.reason}")


@adapters.command("test")
@click.argument("name", required=False)
def adapters_test(name: str | None) -> None:
    """Make a simulated call of NAME (or every adapter) and say what would happen live."""
    from .adapter_state import ADAPTERS
    from .adapters.selftest import check

    for each in [_adapter_name(name)] if name else list(ADAPTERS):
        _print(check(each))


@adapters.command("promote")
@click.argument("name")
def adapters_promote(name: str) -> None:
    """End NAME's canary: every run that may go live goes live."""
    from . import adapter_state

    runtime = _runtime()
    adapter_state.promote(runtime.db, _adapter_name(name), runtime.settings.node_name)
    click.echo(f"{name}: promoted")


@adapters.command("enable")
@click.argument("name")
def adapters_enable(name: str) -> None:
    """Clear NAME's rollback; it starts again in its canary."""
    from . import adapter_state

    runtime = _runtime()
    adapter_state.enable(runtime.db, _adapter_name(name), runtime.settings.node_name)
    click.echo(f"{name}: enabled (canary)")


# -- federation -------------------------------------------------------------------------------

@main.group()
def nodes() -> None:
    """The peers this node pulls events from."""


@nodes.command("register")
@click.argument("url")
@click.argument("name")
@click.argument("token")
def nodes_register(url: str, name: str, token: str) -> None:
    """Add (or update) peer NAME at URL; TOKEN is the one the peer made for this node
    (`aurora federation token create` on the peer). Give - to read it from stdin."""
    from .federation import registry

    if token == "-":
        token = sys.stdin.readline().strip()
    registry.register(_runtime().db, url, name, token)
    click.echo(f"registered {name} at {url.rstrip('/')}")


@nodes.command("list")
def nodes_list() -> None:
    """Each peer's state, last contact, cursor and lag (never its token)."""
    from .federation import registry

    runtime = _runtime()
    rows = registry.listing(runtime.db, float(runtime.policies.current().federation["sync_interval"]))
    if not rows:
        click.echo("no nodes registered")
    for row in rows:
        click.echo(f"{row['name']:<20} {row['state']:<9} {row['url']:<40} cursor {row['cursor']:<8} lag {row['lag']:<6} "
                   f"last seen {row['last_seen'] or '-'}" + (f"  error: {row['last_error']}" if row["last_error"] else ""))


@nodes.command("remove")
@click.argument("name")
def nodes_remove(name: str) -> None:
    """Forget peer NAME (its events stay)."""
    from .federation import registry

    registry.remove(_runtime().db, name)
    click.echo(f"removed {name}")


@main.group()
def federation() -> None:
    """This node's federation tokens, and syncing from peers."""


@federation.group("token")
def federation_token() -> None:
    """Tokens that peers present to pull from this node."""


@federation_token.command("create")
@click.argument("peer")
def federation_token_create(peer: str) -> None:
    """Make a token for PEER; printed once, alone on stdout. At most two are valid per peer."""
    from .federation import tokens

    click.echo(tokens.create(_runtime().db, peer))


@federation_token.command("list")
def federation_token_list() -> None:
    """Show tokens by id, peer and state (never the token)."""
    from .federation import tokens

    for row in tokens.listing(_runtime().db):
        state = f"revoked {row['revoked_at']}" if row["revoked_at"] else "valid"
        click.echo(f"{row['id']:<5} {row['peer']:<20} created {row['created_at']}  {state}")


@federation_token.command("revoke")
@click.argument("token_id", type=int)
def federation_token_revoke(token_id: int) -> None:
    """Revoke token TOKEN_ID (see `aurora federation token list`)."""
    from .federation import tokens

    tokens.revoke(_runtime().db, token_id)
    click.echo(f"revoked token {token_id}")


@federation.command("sync")
@click.argument("name", required=False)
def federation_sync(name: str | None) -> None:
    """Pull new events from every enabled peer (or only NAME) once."""
    from .federation.sync import Syncer

    def progress(step: dict[str, Any]) -> None:
        click.echo(f"{step['node']}: page {step['page']}, {step['new']} new, cursor {step['cursor']}")

    results = Syncer(_runtime()).run(name, progress=progress)
    for result in results:
        click.echo(json.dumps(result))
    if any("error" in r for r in results):
        sys.exit(1)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
def doctor(as_json: bool) -> None:
    """The security checklist: secrets mode, placeholders, quorum, canaries, webhook secrets, rate
    limits, the audit chain, federation tokens, the policy. Exit 0 all good, 1 warnings, 2 errors."""
    from dataclasses import asdict

    from .doctor import exit_status, run_checks

    findings = run_checks(_runtime())
    if as_json:
        _print([asdict(f) for f in findings])
    else:
        marks = {"ok": "ok  ", "warn": "WARN", "error": "FAIL"}
        for f in findings:
            click.echo(f"[{marks[f.level]}] {f.check}: {f.message}" + (f"\n       -> {f.fix}" if f.fix else ""))
    sys.exit(exit_status(findings))


# -- audit ------------------------------------------------------------------------------------

@main.group()
def audit() -> None:
    """The hash-chained audit log of every adapter call."""


@audit.command("verify")
def audit_verify() -> None:
    """Walk the chain; exit 1 and name the first record that was edited or follows a deleted one."""
    from sqlalchemy import select

    from . import audit as audit_log
    from .models import AuditRecord

    db = _runtime().db
    with db.read() as session:
        records = session.scalars(select(AuditRecord).order_by(AuditRecord.pk)).yield_per(1000)
        intact, bad_pk, why = audit_log.verify(records)
        total = session.query(AuditRecord).count()
    if intact:
        click.echo(f"audit chain intact ({total} records)")
        return
    _fail(f"audit chain broken at record {bad_pk}: {why}", 1)


@audit.command("export")
@click.option("--since", default=None, help="ISO date or time (UTC), e.g. 2026-11-01 or 2026-11-01T12:00.")
@click.option("--output", "-o", type=click.File("w"), default="-", help="File to write (default stdout).")
def audit_export(since: str | None, output: Any) -> None:
    """Write audit records as JSON lines, oldest first."""
    from datetime import datetime

    from sqlalchemy import select

    from . import audit as audit_log
    from .models import AuditRecord

    query = select(AuditRecord).order_by(AuditRecord.pk)
    if since:
        try:
            when = datetime.fromisoformat(since)
        except ValueError:
            _fail(f"--since: {since!r} is not an ISO date or time", 2)
        query = query.where(AuditRecord.created_at >= (when if when.tzinfo else when.replace(tzinfo=UTC)))
    with _runtime().db.read() as session:
        for record in session.scalars(query).yield_per(1000):
            output.write(json.dumps(audit_log.as_dict(record), ensure_ascii=False) + "\n")


# -- workflows --------------------------------------------------------------------------------

@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
def validate(files: tuple[Path, ...]) -> None:
    """Check workflow files locally, without a server."""
    from . import documents

    bad = 0
    for path in files:
        try:
            body = path.read_bytes()
            workflow = documents.load(body, fmt="json" if path.suffix == ".json" else "yaml")
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
    if run.get("step"):
        line += f" (step {run['step']})"
    if run["status"] == "awaiting_approval":
        approvals = run.get("approvals", {})
        line += f", {len(approvals.get('votes', []))}/{approvals.get('required')} approvals"
    return line


@main.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--wait", is_flag=True, help="Follow the run until it ends (or waits for approval).")
@click.option("--timeout", default=300.0, show_default=True, help="Seconds to wait at most.")
def submit(file: Path, wait: bool, timeout: float) -> None:
    """Submit a workflow file; with --wait, follow it and print the result."""
    try:
        body = file.read_bytes()
    except OSError as exc:
        _fail(f"{file}: cannot read: {exc.strerror}", 2)
    content_type = "application/json" if file.suffix == ".json" else "application/yaml"
    client = _client()
    run = client.post("/workflows", data=body, headers={"Content-Type": content_type})
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
        if run["status"] in FINAL or run["status"] == "awaiting_approval":
            break
        if time.monotonic() > deadline:
            _fail(f"still {run['status']} after {timeout:.0f} s; follow it with: aurora status {run['id']}", 4)
        time.sleep(0.25)
    if interactive:
        click.echo(err=True)
    _print({k: run[k] for k in ("id", "name", "goal", "status", "result", "error")})
    sys.exit(EXIT_CODES.get(run["status"], 1))


@main.command()
@click.argument("run_id")
def status(run_id: str) -> None:
    """Show one run: document, status, result and timeline."""
    _print(_client().get(f"/workflows/{run_id}"))


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
        click.echo(f"{run['id']}  {run['status']:<18} {run['goal']:<14} {run['name']}  {run['created_at']}")
    if page.get("next_cursor"):
        click.echo(f"more: aurora list --cursor {page['next_cursor']}")


@main.command()
def approvals() -> None:
    """List the runs waiting for your approval."""
    waiting = _client().get("/approvals")["waiting"]
    if not waiting:
        click.echo("nothing waits for you")
    for run in waiting:
        click.echo(f"{run['id']}  {run['goal']:<14} {run['name']:<24} {run['received']}/{run['required']} approvals"
                   f"  by {run['submitted_by']}  until {run['deadline']}")
        click.echo(f"    {json.dumps(run['payload'], ensure_ascii=False)}")


def _vote(run_id: str, decision: str, message: str | None) -> None:
    body = {"comment": message} if message else {}
    result = _client().post(f"/workflows/{run_id}/{decision}", json=body, headers={"X-Aurora-Channel": "cli"})
    gate = result["gate"]
    click.echo(f"{run_id}: {result['status']} ({gate['received']}/{gate['required']} approvals)")


@main.command()
@click.argument("run_id")
@click.option("-m", "--message", default=None, help="A comment for the ledger.")
def approve(run_id: str, message: str | None) -> None:
    """Approve a waiting run."""
    _vote(run_id, "approve", message)


@main.command()
@click.argument("run_id")
@click.option("-m", "--message", default=None, help="A comment for the ledger.")
def reject(run_id: str, message: str | None) -> None:
    """Reject a waiting run (one rejection ends it)."""
    _vote(run_id, "reject", message)


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
    from .router import Rules, route

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
    from .route_eval import evaluate, load_labelled

    if len(files) != 1:
        _fail("usage: aurora route eval FILE.jsonl", 2)
    path = Path(files[0])
    if not path.is_file():
        _fail(f"{path}: no such file", 2)
    report = evaluate(rules, load_labelled(path))
    click.echo(json.dumps(report.as_dict(), ensure_ascii=False, indent=2) if as_json else report.render())
