"""How the CLI prints: human text by default, JSON with ``--json``; tables with a header and
aligned columns; colour only on a terminal (and never with ``NO_COLOR``); times relative to now."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import click

#: ``ctx.meta`` key that ``--json`` sets, for any command of the tree
JSON_KEY = "aurora.json"
#: commands that run services or stream what is already machine-readable: no ``--json`` for them
NO_JSON = {"up", "serve", "worker", "beat", "export"}


def json_wanted() -> bool:
    ctx = click.get_current_context(silent=True)
    return bool(ctx and ctx.meta.get(JSON_KEY))


def _set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.meta[JSON_KEY] = True


def add_json_option(command: click.Command) -> None:
    """Give ``command``, or every command of its tree, a ``--json`` flag (those with their own keep it)."""
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            add_json_option(sub)
    elif command.name not in NO_JSON and not any("--json" in p.opts for p in command.params):
        command.params.append(click.Option(["--json"], is_flag=True, expose_value=False, callback=_set_json,
                                           is_eager=True, help="Print the result as JSON, for scripts."))


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def emit(data: Any, human: Callable[[], None]) -> None:
    """JSON of ``data`` with ``--json``; otherwise whatever ``human`` prints."""
    if json_wanted():
        print_json(data)
    else:
        human()


def colour_on(err: bool = False) -> bool:
    stream = sys.stderr if err else sys.stdout
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def style(text: str, err: bool = False, **how: Any) -> str:
    return click.style(text, **how) if colour_on(err) else text


#: the colour of each status: green done, yellow waiting, red wrong, plain in between
STATUS_COLOURS = {"succeeded": "green", "awaiting_approval": "yellow", "failed": "red", "rejected": "red",
                  "expired": "red", "cancelled": "red", "needs_reconciliation": "magenta", "not_acted": "yellow"}


def status_text(status: str, err: bool = False) -> str:
    return style(status, err, fg=STATUS_COLOURS.get(status), bold=status in STATUS_COLOURS)


def mode_text(label: str, err: bool = False) -> str:
    """LIVE stands out in red on a terminal: it is the one that really happened."""
    colour = {"LIVE": "red", "SIMULATED": "cyan", "BLOCKED": "yellow", "NOT ACTED": "yellow"}.get(label)
    return style(label, err, fg=colour, bold=colour is not None)


def _width(text: str) -> int:
    return len(click.unstyle(text))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], empty: str = "(none)") -> None:
    """A header row and aligned columns; the last column is not padded."""
    if not rows:
        click.echo(empty)
        return
    cells = [[str(c) if c is not None else "-" for c in row] for row in rows]
    widths = [max(_width(r[i]) for r in [list(headers), *cells]) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        parts = [cell + " " * (widths[i] - _width(cell)) if i < len(row) - 1 else cell for i, cell in enumerate(row)]
        return "  ".join(parts).rstrip()

    click.echo(style(line(list(headers)), bold=True))
    for row in cells:
        click.echo(line(row))


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def ago(value: str | None, now: datetime | None = None) -> str:
    """``12 s ago``, ``5 min ago``, ``3 h ago``, ``2 days ago``; ``in 3 days`` for the future."""
    when = parse_time(value)
    if when is None:
        return "-"
    seconds = ((now or datetime.now(UTC)) - when).total_seconds()
    future, seconds = seconds < 0, abs(seconds)
    if seconds < 1:
        return "just now"
    for size, unit in ((86400, "day"), (3600, "h"), (60, "min"), (1, "s")):
        if seconds >= size:
            count = int(seconds // size)
            text = f"{count} {unit}" + ("s" if unit == "day" and count != 1 else "")
            return f"in {text}" if future else f"{text} ago"
    return "just now"


def short_id(run_id: str) -> str:
    """The 8 characters the CLI shows of a run id; every command takes them back."""
    return run_id[:8]
