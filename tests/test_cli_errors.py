"""No misuse of the CLI prints a traceback: every command, with bad input, a database that is not
there or not migrated, or no server, says what is wrong in one line with a hint (issue 17, point 2).
Server-side commands find the stack `aurora up` recorded, from any folder."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from conftest import ROOT, environment_outside, free_port

from aurora.cli import main
from aurora.runtime import set_runtime


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    context = click.Context(group)
    for name in group.list_commands(context):
        command = group.get_command(context, name)
        assert command is not None, f"aurora {' '.join((*prefix, name))} is listed but does not load"
        if isinstance(command, click.Group):
            yield from _commands(command, (*prefix, name))
        else:
            yield (*prefix, name), command


def _bad_args(path: tuple[str, ...], command: click.Command, tmp: Path) -> list[str]:
    """The command with every argument and required option given, each one wrong."""
    junk = tmp / "junk.bin"
    junk.write_bytes(b"not a backup")
    args: list[str] = list(path)
    for param in command.params:
        if isinstance(param, click.Argument):
            if isinstance(param.type, click.types.IntParamType):
                args.append("999")
            elif isinstance(param.type, click.Path):
                args.append(str(junk if param.type.exists else tmp / "missing" / "nope.yaml"))
            else:
                args.append("nope-not-there")
        elif isinstance(param, click.Option) and param.required:
            choices = getattr(param.type, "choices", None)
            args += [param.opts[-1], str(choices[0]) if choices else "nope"]
    if path == ("up",):  # ports of its own: a stack another test runs must not answer instead
        args += ["--port", str(free_port()), "--port", str(free_port())]
    return args


COMMANDS = sorted(_commands(main))
#: the commands whose job is to make and migrate the database
MIGRATING = {("up",), ("bootstrap",), ("db", "upgrade")}
#: commands that never open the database (aurora route reads only the policy's rules)
DATABASE_FREE = {("route",)}


@pytest.fixture
def where(tmp_path: Path, monkeypatch) -> Path:
    """An empty folder to stand in, with no stack recorded and no server to reach."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    monkeypatch.chdir(folder)
    set_runtime(None)
    umask = os.umask(0o022)
    os.umask(umask)
    yield folder
    os.umask(umask)  # `aurora up` sets its own before it refuses
    set_runtime(None)


def _env(tmp_path: Path, database_url: str) -> dict[str, str | None]:
    return {"AURORA_HOME": None, "AURORA_DATABASE_URL": database_url, "AURORA_CLI_CONFIG": str(tmp_path / "cli.json"),
            "AURORA_URL": f"http://127.0.0.1:{free_port()}", "AURORA_TOKEN": "aur_wrong", "NO_COLOR": "1",
            "AURORA_BACKUP_PASSPHRASE": "x" * 12, "AURORA_POLICY_FILE": str(ROOT / "policy" / "batch8_policy.json"),
            "AURORA_SECRETS_FILE": str(tmp_path / "secrets.json")}


def _assert_one_clear_error(done, args: list[str], file: Path | None = None) -> None:
    shown = f"aurora {' '.join(args)} ->\n{done.output}"
    assert isinstance(done.exception, SystemExit), shown + repr(done.exception)
    assert done.exit_code != 0, shown
    assert "Traceback" not in done.output, shown
    first = done.stderr.strip().splitlines()[0] if done.stderr.strip() else ""
    # Aurora's own errors, click's usage errors, or a document's problems by file (as compilers do)
    assert first.startswith(("aurora: ", "Usage: ", "Error: ", *([f"{file}: "] if file else []))), shown


@pytest.mark.parametrize("path, command", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
@pytest.mark.parametrize("database", ["folder missing", "not migrated"])
def test_every_command_misused_says_one_line_never_a_traceback(path, command, database, where, tmp_path) -> None:
    if database == "folder missing":
        url = f"sqlite:///{tmp_path / 'no' / 'such' / 'folder' / 'aurora.db'}"
    else:
        empty = tmp_path / "empty.db"
        sqlite3.connect(empty).close()
        url = f"sqlite:///{empty}"
        if path in MIGRATING:  # migrating that database is what these are for
            if path == ("up",):
                return  # it would migrate that database and start a stack: test_stack.py starts it for real
            done = CliRunner().invoke(main, list(path), env=_env(tmp_path, url))
            assert done.exit_code == 0 and "Traceback" not in done.output, done.output
            return
    args = _bad_args(path, command, tmp_path)
    done = CliRunner().invoke(main, args, env=_env(tmp_path, url))
    if path in DATABASE_FREE:  # no misuse for it: it answers, and touches no database
        assert done.exit_code == 0 and "Traceback" not in done.output, done.output
    else:
        _assert_one_clear_error(done, args, tmp_path / "missing" / "nope.yaml")
    assert not (tmp_path / "no").exists(), "a folder the database URL names was created"
    assert not (where / "var" / "aurora.db").exists(), "a database was created where the command was run"
    if database == "not migrated" and "no Aurora tables" in done.stderr:
        assert "aurora db upgrade" in done.stderr


def _aurora(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "aurora", *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=60)


def test_from_an_empty_folder_a_command_names_the_fix_and_creates_nothing(tmp_path) -> None:
    env = environment_outside()
    env["AURORA_CLI_CONFIG"] = str(tmp_path / "cli.json")
    for args in (["keys", "list"], ["doctor"], ["adapters", "status"], ["keys", "create", "x", "--role", "admin"]):
        done = _aurora(*args, env=env, cwd=tmp_path)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.startswith("aurora: there is no Aurora database at"), done.stderr
        assert "aurora up" in done.stderr and "aurora db upgrade" in done.stderr
    assert not (tmp_path / "var").exists()

    missing = {**env, "AURORA_DATABASE_URL": f"sqlite:///{tmp_path / 'nonexistent' / 'dir' / 'x.db'}"}
    for args in (["db", "upgrade"], ["keys", "list"]):
        done = _aurora(*args, env=missing, cwd=tmp_path)
        assert done.returncode == 2 and "does not exist" in done.stderr, done.stderr
    assert not (tmp_path / "nonexistent").exists()

    empty = tmp_path / "never_migrated.db"
    sqlite3.connect(empty).close()
    unmigrated = {**env, "AURORA_DATABASE_URL": f"sqlite:///{empty}"}
    done = _aurora("keys", "create", "ada", "--role", "admin", env=unmigrated, cwd=tmp_path)
    assert done.returncode == 2 and "has no Aurora tables" in done.stderr and "aurora db upgrade" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 2  # the error and its hint


def test_debug_shows_the_traceback_the_plain_error_hides(tmp_path) -> None:
    env = environment_outside()
    env.update(AURORA_CLI_CONFIG=str(tmp_path / "cli.json"), AURORA_DATABASE_URL=f"sqlite:///{tmp_path / 'x' / 'a.db'}")
    plain = _aurora("keys", "list", env=env, cwd=tmp_path)
    debug = _aurora("--debug", "keys", "list", env=env, cwd=tmp_path)
    assert "Traceback" not in plain.stderr and plain.returncode == 2
    assert "Traceback" in debug.stderr and "DatabaseNotReady" in debug.stderr


def test_debug_shows_the_traceback_of_aurora_up_s_database_check_too(tmp_path) -> None:
    # `aurora up` checks and migrates the database in a child process: --debug must reach it,
    # or the hint "run it again with --debug" only repeats itself
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"not a database, " * 400)
    env = environment_outside()
    env.update(AURORA_CLI_CONFIG=str(tmp_path / "cli.json"), AURORA_HOME=str(tmp_path / "var"),
               AURORA_DATABASE_URL=f"sqlite:///{bad}")
    port = str(free_port())
    plain = _aurora("up", "--port", port, env=env, cwd=tmp_path)
    assert plain.returncode != 0 and "Traceback" not in plain.stderr and "--debug" in plain.stderr, plain.stderr
    debug = _aurora("--debug", "up", "--port", port, env=env, cwd=tmp_path)
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "file is not a database" in debug.stderr


def test_an_error_aurora_did_not_foresee_is_one_line_with_a_hint(where, tmp_path) -> None:
    # migrated, then a table lost: SQLAlchemy's own error, deep inside, with no Aurora error around it
    db = tmp_path / "a.db"
    env = _env(tmp_path, f"sqlite:///{db}")
    assert CliRunner().invoke(main, ["db", "upgrade"], env=env).exit_code == 0
    set_runtime(None)
    with sqlite3.connect(db) as connection:
        connection.execute("DROP TABLE api_keys")
    done = CliRunner().invoke(main, ["keys", "list"], env=env)
    _assert_one_clear_error(done, ["keys", "list"])
    assert done.stderr.splitlines() == ["aurora: OperationalError: (sqlite3.OperationalError) no such table: api_keys",
                                        "  hint: the database is missing Aurora's tables: run `aurora db upgrade`"]


def test_aurora_up_with_a_database_it_cannot_use_says_why_and_records_no_stack(tmp_path) -> None:
    # the database is checked in the bootstrap child now: its one line must still reach the user,
    # and a later command must not find a stack recorded for a database that never worked
    url = f"sqlite:///{tmp_path / 'no' / 'such' / 'folder' / 'aurora.db'}"
    done = CliRunner().invoke(main, ["up", "--port", str(free_port())], env=_env(tmp_path, url))
    _assert_one_clear_error(done, ["up"])
    assert "does not exist" in done.output
    assert not (tmp_path / "stack.json").exists()


def test_a_worker_told_a_negative_concurrency_or_an_unknown_level_is_refused_before_it_starts() -> None:
    for args in (["worker", "-c", "-1"], ["worker", "--system", "-c", "-3"], ["worker", "-l", "loud"],
                 ["beat", "-l", "loud"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2 and "Invalid value" in result.output, (args, result.output)
        assert "Traceback" not in result.output


def test_every_level_the_worker_offers_is_one_celery_takes() -> None:
    from celery.bin.base import LogLevel

    from aurora.cli import stack

    for level in stack.LOG_LEVELS.choices:
        assert stack._celery_level(None, None, level).upper() in LogLevel().choices, level  # type: ignore[arg-type]
