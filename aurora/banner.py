"""What ``aurora up`` prints once the stack answers: one short block that stays on the screen.

Everything a new user needs and nothing else: where the approval page and the API are, the admin
key on first start (or where it is kept), where the docs and the logs are, and how to stop. The
children's own output goes to the log files named in it, so nothing pushes the block away.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

#: the source checkout's documentation, when Aurora runs from one
SOURCE = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class StartUp:
    version: str
    node: str
    urls: list[str]
    key: str | None  # the first admin key, on first start only
    cli_config: Path  # where the CLI keeps URL and key
    logs: Path | None  # the children's log folder; None when they write to this terminal
    log_names: list[str]
    database: str
    broker: str
    root: bool = False


def _short(path: Path) -> str:
    """``path`` relative to the current folder when it lies below it, else as it is (``~`` for home)."""
    try:
        return str(path.relative_to(Path.cwd())) or "."
    except ValueError:
        home = Path.home()
        return "~/" + str(path.relative_to(home)) if path.is_relative_to(home) and home != Path("/") else str(path)


def docs_line(url: str) -> str:
    where = [f"{url}/docs (the API)"]
    if (SOURCE / "README.md").is_file() and (SOURCE / "docs").is_dir():
        where.append(f"{_short(SOURCE / 'README.md')} and {_short(SOURCE / 'docs')}/")
    return " · ".join(where)


def block(s: StartUp) -> str:
    url = s.urls[0]
    rows: list[tuple[str, str]] = [("Approval page", f"{url}/ui/")]
    api = url + (f"  (also {', '.join(s.urls[1:])})" if len(s.urls) > 1 else "")
    rows.append(("API", api))
    rows.append(("Docs", docs_line(url)))
    if s.key:
        rows.append(("Admin key", f"{s.key}  (shown once; saved for the aurora command in {_short(s.cli_config)})"))
        rows.append(("", f"export AURORA_URL={url} AURORA_TOKEN={s.key}"))
    elif s.cli_config.is_file():
        rows.append(("Admin key", f"kept in {_short(s.cli_config)} for the aurora command"))
    else:
        rows.append(("Admin key", "made on first start; another: aurora keys create NAME --role admin"))
    if s.logs is not None:
        rows.append(("Logs", f"{_short(s.logs)}/ ({', '.join(s.log_names)})"))
    rows.append(("Data", f"{s.database} · broker {s.broker}"))
    if s.root:
        rows.append(("Note", "running as root: fine for a try-out; a server runs Aurora as its own user (deploy/)"))
    width = max(len(label) for label, _ in rows) + 2
    lines = [f"Aurora {s.version} is running (node {s.node})", ""]
    lines += [f"  {label:<{width}}{value}" for label, value in rows]
    lines += ["", "Ctrl-C stops everything."]
    return "\n".join(lines)


def running_as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0
