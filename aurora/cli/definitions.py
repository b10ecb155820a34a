"""Stored definitions: ``aurora workflows apply|list|show|history|enable|disable|secret`` and
``aurora run NAME --input k=v``."""

from __future__ import annotations

from pathlib import Path

import click

from ._common import _client, _fail, _print, main, name_segment
from .workflows import INPUT_OPTION, _parse_inputs


@main.group("workflows")
def workflows_group() -> None:
    """Stored workflow definitions: versioned, started by a person, a schedule or a signed webhook."""


@workflows_group.command("apply")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
def apply(files: tuple[Path, ...]) -> None:
    """Store each definition (admin): a changed file makes a new version, an unchanged one nothing."""
    from .. import definitions

    client = _client()
    for path in files:
        try:
            body = path.read_bytes()
        except OSError as exc:
            _fail(f"{path}: cannot read: {exc.strerror}", 2)
        fmt = "json" if path.suffix == ".json" else "yaml"
        name = definitions.parse_definition(body, fmt)[0]["name"]  # the local check names the file
        content_type = "application/json" if fmt == "json" else "application/yaml"
        applied = client.request("PUT", f"/definitions/{name_segment(name)}", data=body,
                                 headers={"Content-Type": content_type})
        state = f"version {applied['version']}" if applied["changed"] else f"unchanged (version {applied['version']})"
        click.echo(f"{path}: {name} {state}")


@workflows_group.command("list")
def list_definitions() -> None:
    """The definitions: version, enabled, triggers, next scheduled start, last runs."""
    rows = _client().get("/definitions")["definitions"]
    if not rows:
        click.echo("no definitions yet: aurora workflows apply FILE")
        return
    width = max(len(r["name"]) for r in rows)
    click.echo(f"{'NAME':<{width}}  VERSION  ENABLED  TRIGGERS          NEXT")
    for r in rows:
        click.echo(f"{r['name']:<{width}}  {r['version']:<7}  {'yes' if r['enabled'] else 'no':<7}  "
                   f"{', '.join(r['triggers']) or '-':<16}  {r['next_firing'] or '-'}")


@workflows_group.command("show")
@click.argument("name")
@click.option("--version", "version", type=int, default=None, help="An earlier version.")
def show(name: str, version: int | None) -> None:
    """One definition: its triggers, the next firing, and the workflow."""
    _print(_client().get(f"/definitions/{name_segment(name)}", version=version))


@workflows_group.command("history")
@click.argument("name")
def history(name: str) -> None:
    """Every version of a definition: when, by whom, its content hash."""
    for v in _client().get(f"/definitions/{name_segment(name)}/history")["versions"]:
        click.echo(f"version {v['version']}  {v['applied_at'][:19].replace('T', ' ')}  {v['applied_by']}  {v['digest'][:12]}")


@workflows_group.command("enable")
@click.argument("name")
def enable(name: str) -> None:
    """Let a definition's triggers and runs start again (admin)."""
    _client().post(f"/definitions/{name_segment(name)}/enable")
    click.echo(f"{name}: enabled")


@workflows_group.command("disable")
@click.argument("name")
def disable(name: str) -> None:
    """Stop a definition: its schedule and webhook start nothing, runs of it are refused (admin)."""
    _client().post(f"/definitions/{name_segment(name)}/disable")
    click.echo(f"{name}: disabled")


@workflows_group.command("secret")
@click.argument("name")
def secret(name: str) -> None:
    """Make (or rotate) the definition's webhook secret and show it once (admin)."""
    answer = _client().post(f"/definitions/{name_segment(name)}/secret")
    click.echo(answer["secret"])
    click.echo(f"shown once: sign POST /hooks/{name} with it (Standard Webhooks); the old one no longer works",
               err=True)


@main.command("run")
@click.argument("name")
@INPUT_OPTION
def run_definition(name: str, inputs: tuple[str, ...]) -> None:
    """Start a run of a stored definition's current version."""
    _print(_client().post(f"/definitions/{name_segment(name)}/runs", json={"inputs": _parse_inputs(inputs) or {}}))
