"""``aurora audit``: verify the keyed chain, sign checkpoints of its head, export it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ._common import _fail, _runtime, main


@main.group()
def audit() -> None:
    """The keyed, hash-chained audit log: adapter calls, votes, key changes, rollouts."""


@audit.command("verify")
@click.option("--checkpoint", "checkpoints", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A file of checkpoints (from `aurora audit checkpoint`) the log must still hold; repeatable. "
                   "The checkpoints kept under AURORA_HOME are always checked.")
@click.option("--witnesses", is_flag=True,
              help="Also ask every registered peer for the checkpoint of this node it holds "
                   "(GET /federation/witness/NODE) and check the log still holds it. Exit 3 when no "
                   "witness answered with a checkpoint of this node: nothing was checked against one.")
def audit_verify(checkpoints: tuple[Path, ...], witnesses: bool) -> None:
    """Check every record against the audit key and the checkpoints; exit 1 naming the first bad
    record (edited, inserted, following a deleted one, or missing after a checkpoint). With
    --witnesses, exit 3 (not 0) when no witness answered with a checkpoint of this node, and say
    how many were asked, answered and agree."""
    from .. import audit as audit_log

    runtime = _runtime()
    verdict = audit_log.verify_node(runtime.settings, runtime.db, checkpoints)
    if witnesses and verdict.intact:
        from ..federation import witness

        answers = witness.ask(runtime)
        for answer in answers:
            if answer.get("checkpoint"):
                cp = answer["checkpoint"]
                click.echo(f"{answer['peer']} holds the checkpoint of {cp.get('created_at')}: "
                           f"{cp['count']} records up to record {cp['head_pk']}")
            else:
                click.echo(f"{answer['peer']}: " + (answer.get("error") or "holds no checkpoint of this node yet"))
            if answer.get("problem"):
                click.echo(f"{answer['peer']} reports: {answer['problem']}")
        verdict = witness.verify(runtime, answers)
        if verdict.intact and any(a.get("problem") or a.get("error") == "holds a checkpoint this node did not sign"
                                  for a in answers):
            _fail("audit chain intact here, but a witness reports a problem (above)", 1)
        if verdict.intact:
            _witnessed(answers, verdict.count)
    if verdict.intact:
        click.echo(f"audit chain intact ({verdict.count} records); head {verdict.head_hash[:16]}")
        return
    where = f" at record {verdict.bad_pk}" if verdict.bad_pk is not None else ""
    _fail(f"audit chain broken{where}: {verdict.why}", 1)


def _witnessed(answers: list[dict[str, Any]], count: int) -> None:
    """Say how many witnesses were asked, answered, and hold a checkpoint the chain agrees with;
    exit 3 when none does: the chain was then checked against no witness at all."""
    answered = [a for a in answers if "error" not in a]
    agree = [a for a in answered if a.get("checkpoint")]
    tally = f"{len(answered)} of {len(answers)} witness(es) answered, {len(agree)} hold(s) a checkpoint of this node"
    if not answers:
        _fail(f"audit chain intact here ({count} records), but not verified by any witness: no peer is "
              "registered to ask", 3)
    if not agree:
        why = "no witness answered" if not answered else "no witness holds a checkpoint of this node yet"
        _fail(f"audit chain intact here ({count} records), but not verified by any witness: {why} ({tally})", 3)
    click.echo(f"{tally}, and the chain agrees with {'it' if len(agree) == 1 else 'each'}")


@audit.command("checkpoint")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also append the checkpoint to this file (keep it off this machine).")
def audit_checkpoint(output: Path | None) -> None:
    """Verify the chain, then print its signed head (count, hash of the newest record, time) as
    one JSON line, and keep it in AURORA_HOME/audit_checkpoints.jsonl. Keep a copy elsewhere: a
    log cut short after it is caught by `aurora audit verify --checkpoint FILE`."""
    from .. import audit as audit_log

    runtime = _runtime()
    settings = runtime.settings
    verdict = audit_log.verify_node(settings, runtime.db)
    if not verdict.intact:
        where = f" at record {verdict.bad_pk}" if verdict.bad_pk is not None else ""
        _fail(f"refusing to sign a broken chain{where}: {verdict.why}", 1)
    checkpoint = audit_log.sign_checkpoint(runtime.db.audit_key(), settings.node_name, verdict.count,
                                           verdict.head_pk, verdict.head_hash)
    for path in [settings.audit_checkpoints_file] + ([output] if output else []):
        audit_log.keep_checkpoint(path, checkpoint)
    click.echo(json.dumps(checkpoint, sort_keys=True))


@audit.command("reseal")
def audit_reseal() -> None:
    """Once after upgrading: seal a log written before the chain was keyed with the audit key
    (every record is checked under the old hash first; a broken chain is refused)."""
    from .. import audit as audit_log

    try:
        count = audit_log.reseal(_runtime().db)
    except ValueError as exc:
        _fail(f"refusing to reseal a broken chain: {exc}", 1)
    click.echo(f"audit chain sealed with the audit key ({count} records); make a checkpoint now: "
               "aurora audit checkpoint")


@audit.command("export")
@click.option("--since", default=None, help="ISO date or time (UTC), e.g. 2026-11-01 or 2026-11-01T12:00.")
@click.option("--output", "-o", type=click.File("w"), default="-", help="File to write (default stdout).")
def audit_export(since: str | None, output: Any) -> None:
    """Write audit records as JSON lines, oldest first."""
    from datetime import UTC, datetime

    from sqlalchemy import select

    from .. import audit as audit_log
    from ..models import AuditRecord

    query = select(AuditRecord).order_by(AuditRecord.pk)
    if since:
        try:
            when = datetime.fromisoformat(since)
        except ValueError:
            _fail(f"--since: {since!r} is not an ISO date or time", 2)
        query = query.where(AuditRecord.created_at >= (when if when.tzinfo else when.replace(tzinfo=UTC)))
    with _runtime().db.read() as session:
        for record in session.scalars(query).yield_per(1000):
            output.write(json.dumps(audit_log.as_dict(record), ensure_ascii=False) + "\n")
