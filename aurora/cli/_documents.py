"""Workflow problems as a person reads them: ``file:line:column: where: what``, then the hint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ._output import style


def print_problems(file: Path | str | None, problems: list[dict[str, Any]], headline: str | None = None) -> None:
    """Each problem once, on stderr, in the order of the file (as compilers print them)."""
    name = str(file) if file else "(workflow)"
    if headline:
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        click.echo(f"aurora: {name}: {headline} ({count})", err=True)
    for problem in problems:
        where = name + (f":{problem['line']}:{problem.get('column') or 1}" if problem.get("line") else "")
        what = f"{problem['path']}: {problem['message']}" if problem.get("path") else problem["message"]
        click.echo(f"{style(where, True, bold=True)}: {what}", err=True)
        if problem.get("hint"):
            click.echo(f"  {style('hint', True, fg='cyan')}: {problem['hint']}", err=True)
