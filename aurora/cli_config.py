"""Where the CLI keeps its server's URL and key: the file ``aurora up`` writes on first start
(mode 0600), apart from the HTTP client so that the supervisor that writes it carries no HTTP
library."""

from __future__ import annotations

import json
import os
from pathlib import Path


def config_path() -> Path:
    if os.environ.get("AURORA_CLI_CONFIG"):
        return Path(os.environ["AURORA_CLI_CONFIG"])
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "aurora" / "cli.json"


def write_config(url: str, token: str) -> Path:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"url": url, "token": token}, handle)
    os.chmod(path, 0o600)
    return path


def read_config() -> dict[str, str]:
    path = config_path()
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
