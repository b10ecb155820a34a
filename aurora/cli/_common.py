"""Shared pieces of the ``aurora`` command: the group, error handling, output helpers."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from .. import __version__
from ..errors import AuroraError, ClientError

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


def _runtime() -> Any:
    from ..runtime import get_runtime

    return get_runtime()


def _client() -> Any:
    from ..client import Client

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
    that `aurora up` writes. Server-side commands (up, serve, worker, beat, keys, people, db) read
    AURORA_DATABASE_URL, AURORA_BROKER_URL and the other AURORA_* settings.
    """
