"""Where the stack lives, for server-side commands run from any folder.

``aurora up`` records its stack (home, database, broker, policy and secrets files) in
``stack.json`` beside the CLI's config file, mode 0600 (a database URL may hold a password).
A command uses it when neither ``AURORA_HOME`` nor ``AURORA_DATABASE_URL`` is set: either of
them names another stack, and mixing the two would pair one stack's home with another's data.
Before anything is opened, the database is checked, so that a command never creates an empty
``var/aurora.db`` where it was started, nor a folder a mistyped path names.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..config import Settings, load_settings
from ..errors import ConfigError

#: the settings a stack file records, by the variable that sets each
RECORDED = {"AURORA_HOME": "home", "AURORA_DATABASE_URL": "database_url", "AURORA_BROKER_URL": "broker_url",
            "AURORA_POLICY_FILE": "policy_file", "AURORA_SECRETS_FILE": "secrets_file",
            "AURORA_AUDIT_KEY_FILE": "audit_key_file"}
#: either of these in the environment names a stack of its own: the file is not read then
OWN_STACK = ("AURORA_HOME", "AURORA_DATABASE_URL")


class DatabaseNotReady(ConfigError):
    """Raised when a command needs Aurora's database and it is missing, unreachable or unmigrated."""

    code = "database_not_ready"

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


def stack_file() -> Path:
    from ..cli_config import config_path

    return config_path().parent / "stack.json"


def record_stack(settings: Settings) -> Path:
    """Write where this stack lives (``aurora up`` does, before it starts anything)."""
    path = stack_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    values = {var: str(getattr(settings, attr)) for var, attr in RECORDED.items() if getattr(settings, attr)}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({**values, "cwd": os.getcwd()}, handle, indent=2)
    os.chmod(path, 0o600)
    return path


def recorded() -> dict[str, str]:
    try:
        data = json.loads(stack_file().read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if k in RECORDED and isinstance(v, str)} if isinstance(data, dict) else {}


def cli_environment(environ: dict[str, str] | None = None) -> tuple[dict[str, str], bool]:
    """The environment the settings are read from, and whether a stack file filled it in."""
    env = dict(os.environ if environ is None else environ)
    if any(env.get(var) for var in OWN_STACK):
        return env, False
    stored = recorded()
    for var, value in stored.items():
        env.setdefault(var, value)
    return env, bool(stored)


#: how much of the database a command needs before it starts
MIGRATES, SERVES, USES = "migrates", "serves", "uses"


def settings_for_cli(need: str = USES) -> Settings:
    env, from_file = cli_environment()
    settings = load_settings(env)
    check_database(settings, need, from_file)
    return settings


def _where_from(from_file: bool) -> str:
    if from_file:
        return f"the stack `aurora up` recorded in {stack_file()}"
    return "AURORA_DATABASE_URL" if os.environ.get("AURORA_DATABASE_URL") else (
        "the default under AURORA_HOME" if os.environ.get("AURORA_HOME") else
        "the default ./var/aurora.db (no AURORA_DATABASE_URL, no stack recorded by `aurora up`)")


def check_database(settings: Settings, need: str = USES, from_file: bool = False) -> None:
    """Refuse, in one sentence with the command that helps, a database the command cannot use.

    Every command needs the folder of a SQLite file to exist. A command that ``MIGRATES`` (up,
    bootstrap, db upgrade) makes the file. Every other one needs Aurora's tables in it; but one that
    ``SERVES`` (serve, worker, beat) starts even when the database cannot be reached: a database
    server down at its start is an outage it rides out (503s, retries), not a misuse."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(settings.database_url)
    except ArgumentError:
        raise DatabaseNotReady(f"AURORA_DATABASE_URL: {settings.database_url.split('@')[-1]!r} is not a database URL",
                               "e.g. sqlite:////srv/aurora/aurora.db or postgresql://user@host/db") from None
    source = _where_from(from_file)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        path = Path(url.database).absolute()
        # the home folder is Aurora's to make; any other missing folder is a typo, not a wish
        if not path.parent.is_dir() and path.parent != settings.home:
            raise DatabaseNotReady(f"the folder of the database {path} does not exist (from {source})",
                                   "create the folder, or point AURORA_DATABASE_URL at an existing one")
        if not path.exists():
            if need == MIGRATES:
                return
            raise DatabaseNotReady(f"there is no Aurora database at {path} (from {source})",
                                   "start the stack with `aurora up` (it makes and records one), run "
                                   "`aurora db upgrade` to make it here, or set AURORA_DATABASE_URL")
    if need != MIGRATES:
        _check_revision(settings.database_url, source, reachable_only=need == SERVES)


def _check_revision(url: str, source: str, reachable_only: bool = False) -> None:
    from sqlalchemy.exc import SQLAlchemyError

    from ..migrations import HEAD, current

    try:
        have = current(url)
    except SQLAlchemyError as exc:
        if reachable_only:
            return
        first = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [""])[0][:160]
        raise DatabaseNotReady(f"cannot open the database ({source}): {first}",
                               "is the database server running, and AURORA_DATABASE_URL right?") from None
    if have is None:
        raise DatabaseNotReady(f"the database ({source}) has no Aurora tables",
                               "run `aurora db upgrade` (or `aurora up`, which migrates it first)")
    if have != HEAD:
        raise DatabaseNotReady(f"the database ({source}) is at revision {have}; this Aurora needs {HEAD}",
                               "run `aurora db upgrade`")
