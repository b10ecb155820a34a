"""Federation: the peer registry, this node's tokens, sync."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from ._common import _runtime, main
from ._output import emit, json_wanted, table

# -- federation -------------------------------------------------------------------------------

@main.group()
def nodes() -> None:
    """The peers this node pulls events from."""


@nodes.command("register")
@click.argument("url")
@click.argument("name")
@click.argument("token")
def nodes_register(url: str, name: str, token: str) -> None:
    """Add (or update) peer NAME at URL; TOKEN is the one the peer made for this node
    (`aurora federation token create` on the peer). Give - to read it from stdin."""
    from ..federation import registry

    from_stdin = token in ("-",)
    registry.register(_runtime().db, url, name, sys.stdin.readline().strip() if from_stdin else token)
    click.echo(f"registered {name} at {url.rstrip('/')}")


@nodes.command("list")
def nodes_list() -> None:
    """Each peer's state, last contact, cursor and lag (never its token)."""
    from ..federation import registry

    runtime = _runtime()
    rows = registry.listing(runtime.db, float(runtime.policies.current().federation["sync_interval"]))
    emit(rows, lambda: table(["NAME", "STATE", "URL", "CURSOR", "LAG", "LAST SEEN", "ERROR"], [
        [r["name"], r["state"], r["url"], r["cursor"], r["lag"], r["last_seen"], r["last_error"] or ""] for r in rows],
        empty="no nodes registered"))


@nodes.command("remove")
@click.argument("name")
def nodes_remove(name: str) -> None:
    """Forget peer NAME (its events stay)."""
    from ..federation import registry

    registry.remove(_runtime().db, name)
    click.echo(f"removed {name}")


@main.group()
def federation() -> None:
    """This node's federation tokens, and syncing from peers."""


@federation.group("token")
def federation_token() -> None:
    """Tokens that peers present to pull from this node."""


@federation_token.command("create")
@click.argument("peer")
def federation_token_create(peer: str) -> None:
    """Make a token for PEER; printed once, alone on stdout. At most two are valid per peer."""
    from ..federation import tokens

    click.echo(tokens.create(_runtime().db, peer))


@federation_token.command("list")
def federation_token_list() -> None:
    """Show tokens by id, peer and state (never the token)."""
    from ..federation import tokens

    rows = tokens.listing(_runtime().db)
    emit(rows, lambda: table(["ID", "PEER", "CREATED", "STATE"], [
        [r["id"], r["peer"], r["created_at"], f"revoked {r['revoked_at']}" if r["revoked_at"] else "valid"] for r in rows],
        empty="no tokens"))


@federation_token.command("revoke")
@click.argument("token_id", type=int)
def federation_token_revoke(token_id: int) -> None:
    """Revoke token TOKEN_ID (see `aurora federation token list`)."""
    from ..federation import tokens

    tokens.revoke(_runtime().db, token_id)
    click.echo(f"revoked token {token_id}")


@federation.command("sync")
@click.argument("name", required=False)
def federation_sync(name: str | None) -> None:
    """Pull new events from every enabled peer (or only NAME) once."""
    from ..federation.sync import Syncer

    def progress(step: dict[str, Any]) -> None:
        if not json_wanted():
            click.echo(f"{step['node']}: page {step['page']}, {step['new']} new, cursor {step['cursor']}")

    results = Syncer(_runtime()).run(name, progress=progress)
    for result in results:
        click.echo(json.dumps(result) if json_wanted() else
                   ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in result.items()))
    if any("error" in r for r in results):
        sys.exit(1)
