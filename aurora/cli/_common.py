"""Shared pieces of the ``aurora`` command: the group, error handling, the runtime, exit codes."""

from __future__ import annotations

import os
import re
import sys
import traceback
from typing import Any, NoReturn
from urllib.parse import quote

import click

from .. import __version__
from ..errors import AuroraError, ClientError
from ._output import print_json

FINAL = {"succeeded", "failed", "rejected", "expired", "cancelled", "needs_reconciliation", "not_acted"}
#: ``aurora submit --wait`` / ``aurora status --exit-code``: how a run stands, as an exit status.
#: A simulated success is not a success of the real thing, so it has its own code.
EXIT_LIVE, EXIT_FAILED, EXIT_WAITING, EXIT_RECONCILE, EXIT_SIMULATED, EXIT_NOT_ACTED, EXIT_PENDING = 0, 1, 3, 4, 5, 6, 7
EXIT_HELP = """\b
Exit status (--wait):
  0  succeeded live: the real call was made
  1  failed, rejected, expired or cancelled
  2  the request was refused (bad workflow, no or wrong key)
  3  awaiting approval
  4  needs_reconciliation: a live call may have happened; check with the provider
  5  succeeded simulated: nothing was sent (dry run, canary, …; see mode_reason)
  6  not_acted: the policy means it live but it would only have been simulated; nothing was sent
  7  not known to be finished: still running at --timeout, blocked (secrets or policy unusable;
     see blocked), or Aurora could not be reached until --timeout (the run id is printed:
     aurora status ID)"""


def exit_code(run: dict[str, Any]) -> int:
    """The exit status of a run as ``aurora submit --wait`` ends it (see :data:`EXIT_HELP`)."""
    status = run["status"]
    if status == "succeeded":
        return EXIT_LIVE if run.get("mode") == "live" else EXIT_SIMULATED
    return {"awaiting_approval": EXIT_WAITING, "needs_reconciliation": EXIT_RECONCILE,
            "not_acted": EXIT_NOT_ACTED}.get(status, EXIT_FAILED if status in FINAL else EXIT_PENDING)


def mode_label(run: dict[str, Any]) -> str:
    """LIVE or SIMULATED in capitals, so one is never read as the other; ``-`` before it acted."""
    mode = run.get("mode")
    if mode:
        return mode.upper()
    return "BLOCKED" if run.get("blocked") else ("NOT ACTED" if run["status"] == "not_acted" else "-")


def _runtime(need: str = "uses") -> Any:
    """This process's runtime. Built for a CLI command from the AURORA_* variables, else from the
    stack ``aurora up`` recorded; the database must exist and carry Aurora's tables (``need``: see
    ``_home.check_database``), so that no command creates a stray ``var/aurora.db``."""
    from ..runtime import Runtime, get_runtime, has_runtime, set_runtime

    if has_runtime():  # set up by whoever embeds the CLI (a test, a server process)
        return get_runtime()
    from ._home import settings_for_cli

    settings = settings_for_cli(need)
    set_runtime(Runtime(settings))
    return get_runtime()


#: what a run id is made of (a UUID, or the start of one): anything else names no run
_RUN_ID = re.compile(r"[0-9A-Fa-f-]+")
#: what a definition's name is made of (the schema's ``name``)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def run_segment(given: str) -> str:
    """``given`` as the path segment of a run, checked here: a run id is hex digits and dashes,
    so ``../health``, ``a/b`` or ``?x=1`` name no run and never reach another endpoint."""
    value = given.strip()
    if not value:
        _fail("give the run's id: the 8 characters `aurora list` prints (any 6 or more will do)", 2)
    if not _RUN_ID.fullmatch(value):
        _fail(f"no run {given[:40]}", 2, "a run id is hex digits and dashes: the 8 characters `aurora list` prints")
    return value


def name_segment(given: str) -> str:
    """A definition's name as a path segment (letters, digits, _ . -, as the schema says), checked here."""
    if not _NAME.fullmatch(given):
        _fail(f"no definition {given[:60]!r}", 2, "aurora workflows list shows them")
    return quote(given, safe="")


def _client() -> Any:
    from ..client import Client

    return Client.from_environment()


def _print(data: Any) -> None:
    print_json(data)


def _fail(message: str, code: int = 1, hint: str | None = None) -> NoReturn:
    click.echo(f"aurora: {message}", err=True)
    if hint:
        click.echo(f"  hint: {hint}", err=True)
    sys.exit(code)


def _client_error(exc: ClientError) -> NoReturn:
    body = exc.body
    if body.get("candidates"):  # an ambiguous run id prefix: name the runs it fits
        click.echo(f"aurora: {exc}", err=True)
        for run in body["candidates"]:
            click.echo(f"  {run['id']}  {run.get('status', ''):<18} {run.get('name', '')}", err=True)
        sys.exit(2)
    if body.get("errors"):
        from ._documents import print_problems

        readable = body.get("error") != "malformed_workflow"
        print_problems(None, body["errors"], "the server refused it" if readable else "the workflow cannot be read")
        sys.exit(2)
    from ..client import NOT_AURORA_HINT

    hint = None
    if body.get("error") == "not_aurora":
        _fail(str(exc), 2, NOT_AURORA_HINT)
    if exc.status is None:
        hint = "is the stack running? `aurora up` starts it; AURORA_URL says where the CLI looks"
    elif exc.status == 401:
        hint = "set AURORA_TOKEN to a valid key (`aurora keys create NAME --role ROLE` on the server)"
    elif exc.status >= 500 and body.get("error") != "unavailable":
        hint = "Aurora failed on the server: its log says why (`aurora up` keeps it in var/logs/web.log)"
    _fail(str(exc), 2 if exc.status and exc.status < 500 else 1, hint)


def _unexpected(exc: Exception) -> NoReturn:
    first = (str(exc).strip().splitlines() or [""])[0][:200]
    hint = "run it again with --debug for the traceback"
    if "no such table" in first or "UndefinedTable" in exc.__class__.__name__:
        hint = "the database is missing Aurora's tables: run `aurora db upgrade`"
    _fail(f"{exc.__class__.__name__}: {first}" if first else exc.__class__.__name__, 1, hint)


def _reader_gone() -> NoReturn:
    """Whoever read stdout stopped (``aurora audit export | head -1``): end quietly, as Unix tools
    do. stdout goes to /dev/null first, or the interpreter's last flush would fail once more."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    sys.exit(141)  # 128 + SIGPIPE, what the shell reports for a killed writer


#: the module of ``aurora.cli`` that defines each command: a module is imported when one of its
#: commands is run (all of them for ``--help``), so that ``aurora worker`` and ``aurora up`` carry
#: no HTTP client and no other command for as long as they run
COMMAND_MODULES = {
    "adapters": "admin", "doctor": "admin", "keys": "admin", "people": "admin",
    "prune": "backups", "secrets": "backups",
    "run": "definitions", "workflows": "definitions",
    "federation": "federation", "nodes": "federation",
    "audit": "ledger",
    "beat": "stack", "bootstrap": "stack", "db": "stack", "serve": "stack", "up": "stack", "worker": "stack",
    "approvals": "workflows", "approve": "workflows", "cancel": "workflows", "list": "workflows",
    "reject": "workflows", "rerun": "workflows", "route": "workflows", "status": "workflows",
    "submit": "workflows", "validate": "workflows",
}


class AuroraGroup(click.Group):
    """Turns every error into one clear line, a hint and an exit status; ``--debug`` shows the
    traceback instead. Loads a command's module when the command is asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMAND_MODULES)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in COMMAND_MODULES and cmd_name not in self.commands:
            from importlib import import_module

            from ._output import add_json_option

            import_module(f"{__package__}.{COMMAND_MODULES[cmd_name]}")
            for command in list(self.commands.values()):  # each command the module brought
                add_json_option(command)
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit, KeyboardInterrupt):
            raise
        except BrokenPipeError:
            _reader_gone()
        except Exception as exc:  # noqa: BLE001 - the one place the CLI turns errors into words
            if ctx.params.get("debug"):
                traceback.print_exc()
                sys.exit(1)
            if isinstance(exc, ClientError):
                _client_error(exc)
            if isinstance(exc, AuroraError):
                _fail(str(exc), 2, getattr(exc, "hint", None))
            _unexpected(exc)


@click.group(cls=AuroraGroup)
@click.version_option(__version__, prog_name="aurora")
@click.option("--debug", is_flag=True, help="Show the traceback of an error.")
def main(debug: bool) -> None:
    """Aurora: submit, run and watch workflows, safely (dry run unless everything says live).

    The CLI talks to the server at AURORA_URL with the key in AURORA_TOKEN, or the config file
    that `aurora up` writes. Server-side commands (keys, people, adapters, doctor, audit, db …)
    use the AURORA_* settings; without AURORA_HOME and AURORA_DATABASE_URL, the stack that
    `aurora up` last started, from any folder. Every command takes --json for scripts.
    """
