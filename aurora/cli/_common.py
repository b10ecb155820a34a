"""Shared pieces of the ``aurora`` command: the group, error handling, output helpers."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from .. import __version__
from ..errors import AuroraError, ClientError

FINAL = {"succeeded", "failed", "rejected", "expired", "cancelled", "needs_reconciliation"}
#: ``aurora submit --wait`` / ``aurora status``: 0 succeeded, 3 waiting for approvals, 4 a live call
#: may have happened and a person must check it with the provider, 1 anything else
EXIT_CODES = {"succeeded": 0, "awaiting_approval": 3, "needs_reconciliation": 4}


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
