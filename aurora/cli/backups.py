"""``aurora secrets backup`` / ``restore`` (the secrets file and the audit key, encrypted), and
``aurora prune`` (old runs' bulky parts to an archive)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from ._common import _fail, _runtime, main


def _passphrase(confirm: bool) -> str:
    # An environment variable for cron; a prompt (never echoed) for people.
    given = os.environ.get("AURORA_BACKUP_PASSPHRASE")
    return given or click.prompt("Passphrase", hide_input=True, confirmation_prompt=confirm)


@main.group("secrets")
def secrets_group() -> None:
    """Encrypted backups of the secrets file and the audit key."""


@secrets_group.command("backup")
@click.argument("output", type=click.Path(dir_okay=False, path_type=Path))
def secrets_backup(output: Path) -> None:
    """Write the secrets file and the audit key to OUTPUT, encrypted with a passphrase (scrypt +
    AES-256-GCM; AURORA_BACKUP_PASSPHRASE, or asked for). Keep it off this machine."""
    from ..backup import make

    settings = _runtime("migrates").settings  # the files only: a new machine may have no database yet
    done = make(settings.secrets_file, settings.audit_key_path, _passphrase(True), output,
                record=settings.home / "last_backup.json")
    click.echo(f"backup written to {output} (" + ", ".join(k.replace("_", " ") for k, v in done.items() if v) + ")")


@secrets_group.command("restore")
@click.argument("backup", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def secrets_restore(backup: Path) -> None:
    """Restore the secrets file and the audit key from BACKUP, mode 0600. A wrong passphrase or a
    changed file is refused and nothing is written; an existing, different audit key is kept."""
    from ..backup import restore
    from ..errors import BackupError

    settings = _runtime("migrates").settings  # the files only: a new machine may have no database yet
    try:
        done = restore(backup, _passphrase(False), settings.secrets_file, settings.audit_key_path)
    except BackupError as exc:
        _fail(str(exc), 1)
    click.echo("restored: " + ", ".join(k.replace("_", " ") for k, v in done.items() if v))


@main.command("prune")
@click.option("--before", "before", required=True, metavar="DATE",
              help="Prune settled runs that finished before this date (YYYY-MM-DD, or an ISO time; UTC).")
def prune_command(before: str) -> None:
    """Move settled runs' document, steps and events to a gzip JSON-lines file under
    $AURORA_HOME/archive and remove them from the database. The runs' rows, results and the audit
    chain stay (``aurora audit verify`` still passes); ``aurora status`` names a pruned run's archive.
    Runs needing reconciliation are kept."""
    from datetime import UTC, datetime

    from ..prune import prune

    try:
        when = datetime.fromisoformat(before)
    except ValueError:
        _fail(f"--before: {before[:40]!r} is not a date (YYYY-MM-DD) or an ISO time", 2)
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    runtime = _runtime()
    done = prune(runtime.db, runtime.settings.home, when, runtime.settings.node_name)
    if not done["runs"]:
        click.echo(f"nothing to prune: no settled run finished before {when.isoformat()}")
        return
    click.echo(f"pruned {done['runs']} run(s) ({done['steps']} steps, {done['events']} events) into {done['archive']}")
