"""The CLI speaks to people (issue 17, points 3-5): run ids by the 8 characters it prints, human
output with --json for scripts, tables with headers, colour on a terminal only, a progress line that
ends cleanly, the next step of a waiting run, paging that keeps its filters, and workflow mistakes
named by file, line and column with a hint."""

from __future__ import annotations

import json
import os
import pty
import re
import select as io_select
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import ROOT, free_port
from sqlalchemy import select
from werkzeug.serving import make_server

from aurora.cli import main
from aurora.models import Run

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@pytest.fixture
def served(app: Any) -> Iterator[int]:
    port = free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield port
    server.shutdown()


@pytest.fixture
def working(runtime: Any, served: int) -> Iterator[int]:
    """The served app, with a thread doing a worker's job: each queued run is executed."""
    stop = threading.Event()

    def work() -> None:
        while not stop.is_set():
            with runtime.db.read() as session:
                queued = session.scalars(select(Run.id).where(Run.status == "queued")).all()
            for run_id in queued:
                runtime.engine.execute(run_id)
            time.sleep(0.05)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    yield served
    stop.set()
    thread.join(5)


def cli(port: int, token: str, tmp_path: Path, *args: str, input: str | None = None) -> Any:
    environment = {"AURORA_URL": f"http://127.0.0.1:{port}", "AURORA_TOKEN": token,
                   "AURORA_CLI_CONFIG": str(tmp_path / "cli.json")}
    return CliRunner().invoke(main, list(args), env=environment, input=input)


def _wait_status(port: int, token: str, tmp_path: Path, run_id: str, status: str) -> dict[str, Any]:
    for _ in range(200):
        run = json.loads(cli(port, token, tmp_path, "status", run_id, "--json").stdout)
        if run["status"] == status:
            return run
        time.sleep(0.05)
    raise AssertionError(run)


def test_a_waiting_run_by_its_8_characters_reads_as_a_summary_with_the_next_step(
        working, api_keys, tmp_path) -> None:
    port = working
    waited = cli(port, api_keys.submitter, tmp_path, "submit", str(ROOT / "workflows" / "charge_invoice.yaml"),
                 "--wait", "--timeout", "30")
    assert waited.exit_code == 3, waited.output
    short = waited.stderr.split()[0]
    assert len(short) == 8 and "{" not in waited.stdout  # words, not JSON
    assert "Next:" in waited.stdout and f"aurora approve {short}" in waited.stdout
    run_id = json.loads(cli(port, api_keys.viewer, tmp_path, "list", "--json").stdout)["runs"][0]["id"]
    assert run_id.startswith(short) and f"http://127.0.0.1:{port}/ui/runs/{run_id}" in waited.stdout

    shown = cli(port, api_keys.viewer, tmp_path, "status", short)
    assert shown.exit_code == 0, shown.output
    lines = {line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in shown.stdout.splitlines()
             if re.match(r"^[A-Z][a-z]+:", line)}
    assert lines["Does"] == "charge 150.00 EUR to cus_123"
    assert lines["Status"].startswith("awaiting_approval")
    assert lines["Mode"] == "SIMULATED once approved (policy: dry_run is true)"
    assert lines["Approvals"].startswith("0 of 2; 2 more needed")
    assert lines["Next"].startswith(f"approve it: aurora approve {short}")
    timeline = shown.stdout.split("Timeline:\n")[1].splitlines()
    assert re.match(r"^\s+(just now|\d+ s ago)  submitted by sam$", timeline[0]), timeline
    assert any("waits for approval (0 of 2)" in line for line in timeline)
    assert not ANSI.search(shown.output)  # not a terminal: no colour

    voted = cli(port, api_keys.approver, tmp_path, "approve", short, "-m", "ok", input="y\n")  # shown, and asked
    assert voted.exit_code == 0 and f"{short}: awaiting_approval (1 of 2 approvals)" in voted.stdout, voted.output
    after = cli(port, api_keys.viewer, tmp_path, "status", short[:6])
    assert "Approvals: 1 of 2 (alice); 1 more needed" in after.stdout, after.stdout
    rejected = cli(port, api_keys.admin, tmp_path, "reject", run_id[:7], "--json", input="y\n")
    assert json.loads(rejected.stdout)["status"] == "rejected"
    final = cli(port, api_keys.viewer, tmp_path, "status", short).stdout
    assert "Result:" in final and "rejected by admin; nothing was sent" in final and "Next:" not in final


def test_a_prefix_too_short_or_fitting_two_runs_is_refused_and_names_them(
        served, api_keys, client, tmp_path, monkeypatch) -> None:
    import aurora.engine

    ids = iter([uuid.UUID("abcdef01-0000-4000-8000-000000000001"), uuid.UUID("abcdef01-0000-4000-8000-000000000002")])
    monkeypatch.setattr(aurora.engine, "uuid", SimpleNamespace(uuid4=lambda: next(ids)))
    mail = (ROOT / "workflows" / "send_report.yaml").read_bytes()
    for _ in range(2):
        sent = client.post("/workflows", data=mail, headers={**api_keys.header("submitter"),
                                                             "Content-Type": "application/yaml"})
        assert sent.status_code == 201
    short = client.get("/workflows/abcde", headers=api_keys.header("viewer"))
    assert short.status_code == 400 and short.json["error"] == "bad_run_id"
    both = client.get("/workflows/ABCDEF01", headers=api_keys.header("viewer"))
    assert both.status_code == 409 and both.json["error"] == "ambiguous_run_id"
    assert [c["id"] for c in both.json["candidates"]] == ["abcdef01-0000-4000-8000-000000000001",
                                                          "abcdef01-0000-4000-8000-000000000002"]
    one = client.get("/workflows/abcdef01-0000-4000-8000-000000000002", headers=api_keys.header("viewer"))
    assert one.status_code == 200
    assert client.get("/workflows/abcdef01-0000-4000-8000-00000000000", headers=api_keys.header("viewer")
                      ).status_code == 409
    assert client.get("/workflows/0123456789", headers=api_keys.header("viewer")).status_code == 404

    for command in (["status"], ["cancel"], ["approve"]):
        done = cli(served, api_keys.admin, tmp_path, *command, "abcdef01")
        assert done.exit_code == 2 and "Traceback" not in done.output, done.output
        assert "fits 2 runs" in done.stderr and "abcdef01-0000-4000-8000-000000000001" in done.stderr
        assert "abcdef01-0000-4000-8000-000000000002" in done.stderr
    too_short = cli(served, api_keys.admin, tmp_path, "status", "abcde")
    assert too_short.exit_code == 2 and "at least 6 characters" in too_short.stderr


def test_list_has_a_header_aligned_columns_and_a_paging_hint_that_keeps_the_filters(
        working, api_keys, tmp_path) -> None:
    port = working
    for name in ("send_report", "send_report", "charge_invoice", "send_report"):
        done = cli(port, api_keys.submitter, tmp_path, "submit", str(ROOT / "workflows" / f"{name}.yaml"), "--wait")
        assert done.exit_code in (3, 5), done.output
    page = cli(port, api_keys.viewer, tmp_path, "list", "--status", "succeeded", "--limit", "1")
    lines = page.stdout.splitlines()
    assert lines[0].split() == ["ID", "STATUS", "MODE", "GOAL", "NAME", "CREATED"]
    assert lines[1].index("succeeded") == lines[0].index("STATUS")
    assert lines[1].index("SIMULATED") == lines[0].index("MODE")
    hint = lines[-1]
    assert hint.startswith("more: aurora list --status succeeded --limit 1 --cursor "), hint
    following = cli(port, api_keys.viewer, tmp_path, *hint.removeprefix("more: aurora ").split())
    rows = following.stdout.splitlines()[1:]
    assert rows[0].split()[0] != lines[1].split()[0] and "succeeded" in rows[0]
    everything = json.loads(cli(port, api_keys.viewer, tmp_path, "list", "--json").stdout)
    assert len(everything["runs"]) == 4 and everything["next_cursor"] is None


def test_server_side_tables_have_headers_and_json(runtime, api_keys, tmp_path) -> None:
    keys_table = CliRunner().invoke(main, ["keys", "list"])
    lines = keys_table.stdout.splitlines()
    assert lines[0].split() == ["NAME", "PERSON", "ROLE", "KEY", "ID", "STATE"]
    assert all(line[lines[0].index("ROLE"):].split()[0] in {"admin", "submitter", "approver", "viewer"}
               for line in lines[1:])
    assert {k["name"] for k in json.loads(CliRunner().invoke(main, ["keys", "list", "--json"]).stdout)} == {
        "admin", "sam", "sue", "alice", "vic"}
    people = CliRunner().invoke(main, ["people", "list"]).stdout.splitlines()
    assert people[0].split() == ["PERSON", "ROLE", "STATE", "KEYS"]
    status = CliRunner().invoke(main, ["adapters", "status"])
    assert status.stdout.splitlines()[0].split() == ["ADAPTER", "NEW", "RUNS", "STAGE", "CREDENTIALS", "WHY"]
    assert {r["adapter"] for r in json.loads(CliRunner().invoke(main, ["adapters", "status", "--json"]).stdout)} >= {
        "mailgun", "stripe"}
    tested = CliRunner().invoke(main, ["adapters", "test", "mailgun"])
    assert tested.exit_code == 0 and "{" not in tested.stdout
    assert "mailgun: simulated call ok" in tested.stdout and "a run now would be SIMULATED" in tested.stdout
    assert json.loads(CliRunner().invoke(main, ["adapters", "test", "mailgun", "--json"]).stdout)["adapter"] == "mailgun"
    created = json.loads(CliRunner().invoke(main, ["keys", "create", "ci", "--role", "viewer", "--json"]).stdout)
    assert created["key"].startswith("aur_") and created["role"] == "viewer"


def _on_a_terminal(args: list[str], env: dict[str, str], stream: str) -> str:
    """Run the real ``aurora`` with ``stream`` (stdout or stderr) on a pseudo-terminal; what it showed."""
    leader, follower = pty.openpty()
    other = subprocess.PIPE
    proc = subprocess.Popen([sys.executable, "-m", "aurora", *args], env=env,
                            stdout=follower if stream == "stdout" else other,
                            stderr=follower if stream == "stderr" else other)
    os.close(follower)
    shown = b""
    while True:
        ready, _, _ = io_select.select([leader], [], [], 30)
        if not ready:
            break
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        shown += chunk
    proc.wait(timeout=30)
    os.close(leader)
    return shown.decode(errors="replace")


def test_colour_and_the_progress_line_only_on_a_terminal(served, api_keys, tmp_path) -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AURORA_") and k != "NO_COLOR"},
           "AURORA_URL": f"http://127.0.0.1:{served}", "AURORA_TOKEN": api_keys.submitter,
           "AURORA_CLI_CONFIG": str(tmp_path / "cli.json"), "TERM": "xterm"}
    # nobody works the queue here: the run stays queued until --timeout
    shown = _on_a_terminal(["submit", str(ROOT / "workflows" / "send_report.yaml"), "--wait", "--timeout", "1"],
                           env, "stderr")
    assert "\r\x1b[K" in shown and "send_report: queued" in shown, repr(shown)
    assert re.search(r"send_report: queued[^\n]*\r?\n\s*aurora: still queued after 1 s", shown), repr(shown)
    run_id = json.loads(cli(served, api_keys.viewer, tmp_path, "list", "--json").stdout)["runs"][0]["id"]
    coloured = _on_a_terminal(["status", run_id[:8]], env, "stdout")
    assert ANSI.search(coloured) and "queued" in coloured
    plain = _on_a_terminal(["status", run_id[:8]], {**env, "NO_COLOR": "1"}, "stdout")
    assert not ANSI.search(plain) and "queued" in plain


TAB = "name: send_report\ngoal: send_email\npayload:\n\tto: kunde@example.com\n"
COMMA = "name: pay\ngoal: charge\npayload:\n  customer: cus_1\n  amount: 150,00\n  currency: EUR\n"
UNQUOTED = "name: pay\ngoal: charge\npayload:\n  customer: cus_1\n  amount: 150.00\n  currency: EUR\n"
TYPO = "name: send_report\ngoal: send_email\npaylod:\n  to: kunde@example.com\n  subject: Hi\n  template: t\n"


@pytest.mark.parametrize("body, where, message, hint", [
    (TAB, "4:1", "invalid YAML: a tab where YAML expects spaces", "line 4 is indented with a tab; YAML indents with spaces"),
    (COMMA, "5:11", 'payload.amount: "150,00" is not valid here: Decimal string in major units', 'write a decimal point: "150.00"'),
    (UNQUOTED, "5:11", "payload.amount: must be of type string, got 150.0", 'put it in quotes so it stays text: "150.00"'),
    (TYPO, "3:1", "paylod: unknown key; allowed here:", "did you mean 'payload'?"),
], ids=["tab", "decimal comma", "unquoted amount", "typo"])
def test_a_workflow_mistake_is_named_by_file_line_and_column_once_with_a_hint(
        body, where, message, hint, served, api_keys, client, tmp_path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(body)
    checked = CliRunner().invoke(main, ["validate", str(path)])
    assert checked.exit_code == 1
    first = checked.stderr.splitlines()
    assert first[0].startswith(f"{path}:{where}: {message}"), checked.stderr
    assert first[1] == f"  hint: {hint}" or first[1].startswith(f"  hint: {hint}"), checked.stderr
    assert "is required" not in checked.stderr  # `paylod` is one slip, told once

    sent = cli(served, api_keys.submitter, tmp_path, "submit", str(path))
    assert sent.exit_code == 2 and "Traceback" not in sent.output
    lines = sent.stderr.splitlines()
    assert lines[0].startswith(f"aurora: {path}: the server refused it (1 problem)"), sent.stderr
    assert lines[1].startswith(f"{path}:{where}: {message}") and hint in lines[2], sent.stderr
    assert len(lines) == 3  # each problem once

    answer = client.post("/workflows", data=body, headers={**api_keys.header("submitter"),
                                                           "Content-Type": "application/yaml"})
    assert answer.status_code in (400, 422)
    [problem] = answer.json["errors"]
    assert f"{problem['line']}:{problem['column']}" == where and hint in problem["hint"]


def test_validate_json_lists_every_problem_with_its_place(tmp_path) -> None:
    path = tmp_path / "two.yaml"
    path.write_text("name: 'bad name!'\ngoal: charge\npayload: {customer: x, amount: 150, currency: EURO}\n")
    report = json.loads(CliRunner().invoke(main, ["validate", str(path), "--json"]).stdout)
    [entry] = report
    assert not entry["ok"] and {p["path"] for p in entry["problems"]} >= {"name", "payload.customer", "payload.amount"}
    assert all(p["line"] in (1, 3) for p in entry["problems"])
    good = CliRunner().invoke(main, ["validate", str(ROOT / "workflows" / "send_report.yaml")])
    assert good.exit_code == 0 and "ok (send_email, send_report)" in good.stdout


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_prefix_lookup_on_both_databases(backend, env, request, monkeypatch) -> None:
    import aurora.engine
    from aurora import documents, runs
    from aurora.config import load_settings
    from aurora.migrations import upgrade
    from aurora.runtime import Runtime, set_runtime

    if backend == "postgresql":
        env = {**env, "AURORA_DATABASE_URL": request.getfixturevalue("postgres_url")}
    runtime = Runtime(load_settings(env))
    upgrade(runtime.settings.database_url)
    set_runtime(runtime)
    try:
        ids = iter(uuid.UUID(f"0a1b2c3d-0000-4000-8000-00000000000{n}") for n in (1, 2, 3))
        monkeypatch.setattr(aurora.engine, "uuid", SimpleNamespace(uuid4=lambda: next(ids)))
        workflow = documents.load((ROOT / "workflows" / "send_report.yaml").read_bytes())
        for _ in range(2):
            runtime.engine.submit(workflow, "sam")
        with runtime.db.read() as session:
            assert runs.resolve_id(session, "0A1B2C3D-0000-4000-8000-000000000002") == \
                "0a1b2c3d-0000-4000-8000-000000000002"
            with pytest.raises(runs.AmbiguousRunId) as ambiguous:
                runs.resolve_id(session, "0a1b2c")
            assert len(ambiguous.value.body_extra["candidates"]) == 2
            for missing in ("0a1b2c3e", "0a1b2c3d-0000-4000-8000-0000000000019", "0a1b2c%", "0a1b2_"):
                with pytest.raises(runs.NotFound):
                    runs.resolve_id(session, missing)
            if backend == "postgresql":
                from sqlalchemy import text

                assert session.scalar(text("SELECT count(*) FROM pg_indexes WHERE indexname = 'ux_runs_id'"))
    finally:
        set_runtime(None)
