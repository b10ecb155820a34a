"""Federation: the peer registry, this node's tokens, sync."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from ._common import _fail, _runtime, main
from ._output import emit, json_wanted, table

# -- federation -------------------------------------------------------------------------------

@main.group()
def nodes() -> None:
    """The peers this node pulls events from."""


#: where ``aurora nodes register`` reads the peer's token when it is given neither as a file nor on stdin
TOKEN_VARIABLE = "AURORA_PEER_TOKEN"


@nodes.command("register")
@click.argument("url")
@click.argument("name")
@click.argument("token", required=False, metavar="[TOKEN]")
@click.option("--token-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              metavar="FILE", help="Read the token from FILE (its first line).")
@click.option("--public-key", default=None, metavar="KEY",
              help="The peer's key (ed25519:…, from `aurora federation identity` on it), pinned without asking "
                   "the peer; replaces a pinned key.")
@click.option("--fingerprint", default=None, metavar="FP",
              help="The fingerprint the peer's operator told you: the key the peer shows must have it.")
@click.option("--yes", is_flag=True, help="Pin the key the peer shows without asking (scripts).")
def nodes_register(url: str, name: str, token: str | None, token_file: Path | None, public_key: str | None,
                   fingerprint: str | None, yes: bool) -> None:
    """Add (or update) peer NAME at URL, with the token the peer made for this node
    (`aurora federation token create` on the peer). Give the token with --token-file FILE, in
    $AURORA_PEER_TOKEN, as - to read it from stdin, or type it at the prompt (not shown); a
    TOKEN on the command line still works but is visible to every user of this machine in `ps`
    (a warning says so).

    The peer's public key is pinned: every event it sends must carry its signature. Without
    --public-key the key is read from URL/federation/identity and shown with its fingerprint;
    compare it with `aurora federation identity` on the peer. On a terminal you are asked to
    confirm; a script (no terminal, or --yes) pins it as shown. Registering again keeps the
    pinned key and refuses a peer that shows another one."""
    from ..federation import identity, registry

    runtime = _runtime()
    token, from_stdin = _peer_token(token, token_file)
    repin = public_key is not None
    if public_key is None:
        shown = registry.fetch_identity(url)
        if shown["node"] and shown["node"] != name:
            _fail(f"{url.rstrip('/')} is node {shown['node']!r}, not {name!r}: register it under its own name "
                  "(events carry their origin's name)", 2)
        public_key = shown["public_key"]
        pinned = registry.pinned_key(runtime.db, name)
        click.echo(f"{name} shows the key {public_key}\n  fingerprint {shown['fingerprint']}"
                   + ("  (already pinned)" if pinned == public_key else ""))
        if fingerprint is not None:
            if fingerprint.strip().lower().replace(" ", "") != shown["fingerprint"]:
                _fail(f"the key {name} shows has the fingerprint {shown['fingerprint']}, not {fingerprint}: not pinned", 2)
        elif pinned != public_key and not yes and sys.stdin.isatty() and not from_stdin:
            if not click.confirm("Pin this key for the node?", default=False):
                _fail("not registered: the key was not confirmed", 1)
    else:
        try:
            click.echo(f"pinning {name}'s key, fingerprint {identity.fingerprint(public_key)}")
        except ValueError as exc:
            _fail(f"--public-key: {exc}", 2)
    registry.register(runtime.db, url, name, token, public_key=public_key,
                      secret_path=runtime.settings.federation_secret_path, repin=repin)
    click.echo(f"registered {name} at {url.rstrip('/')}")


def _peer_token(argument: str | None, path: Path | None) -> tuple[str, bool]:
    """The peer's token, from the one place it was given; and whether stdin was read for it."""
    given = [where for where, value in (("TOKEN", argument), ("--token-file", path),
                                        (TOKEN_VARIABLE, os.environ.get(TOKEN_VARIABLE))) if value]
    if len(given) > 1:
        _fail(f"the token is given more than once ({', '.join(given)}): give it once", 2)
    from_stdin = argument == "-"
    if from_stdin:
        token = sys.stdin.readline()
    elif argument:
        click.echo("aurora: warning: a token on the command line is visible to every user of this machine "
                   f"(ps, /proc) and kept in shell history; give it with --token-file FILE, ${TOKEN_VARIABLE}, "
                   "- (stdin) or at the prompt", err=True)
        token = argument
    elif path is not None:
        try:
            token = path.read_text(encoding="utf-8").partition("\n")[0]
        except (OSError, UnicodeDecodeError) as exc:
            _fail(f"--token-file: cannot read {path}: {exc.__class__.__name__}", 2)
    elif os.environ.get(TOKEN_VARIABLE):
        token = os.environ[TOKEN_VARIABLE]
    elif sys.stdin.isatty():
        token = click.prompt("Token (from `aurora federation token create` on the peer)", hide_input=True)
    else:
        _fail(f"no token: give it with --token-file FILE, ${TOKEN_VARIABLE}, - (stdin) or at the prompt", 2)
    token = token.strip()
    if not token:
        _fail("the token is empty", 2)
    return token, from_stdin


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
    """Stop pulling from peer NAME (its events stay, and so does its pinned key: no relay can
    introduce another key for it; register it again with --public-key to change it)."""
    from ..federation import registry

    registry.remove(_runtime().db, name)
    click.echo(f"removed {name}")


@main.group()
def federation() -> None:
    """This node's federation tokens, and syncing from peers."""


@federation.command("identity")
@click.option("--json", "as_json", is_flag=True, help="Print it as JSON.")
def federation_identity(as_json: bool) -> None:
    """This node's public key and its fingerprint: peers pin it when they register this node
    (read it to their operator out of band). The key pair is in AURORA_HOME/node_identity.pem."""
    shown = _runtime().identity.as_dict()
    if as_json:
        click.echo(json.dumps(shown))
        return
    click.echo(f"node         {shown['node']}\npublic key   {shown['public_key']}\nfingerprint  {shown['fingerprint']}")


@federation.command("keys")
def federation_keys() -> None:
    """The origin keys this node knows: pinned at registration, or introduced by a pinned peer."""
    from ..federation import trust

    rows = trust.listing(_runtime().db)
    if not rows:
        click.echo("no keys known")
    for row in rows:
        via = f" by {row['introduced_by']}" if row["introduced_by"] else ""
        click.echo(f"{row['origin']:<20} {row['fingerprint']}  {row['source']}{via} since {row['since']}")


@federation.group("witness")
def federation_witness() -> None:
    """The audit checkpoints this node publishes, and those it holds for its peers."""


@federation_witness.command("publish")
def federation_witness_publish() -> None:
    """Publish this node's audit head as a signed checkpoint event now (beat does it every sync_interval)."""
    from ..federation import witness

    data = witness.publish(_runtime())
    click.echo(json.dumps(data) if data else "unchanged since the last checkpoint published: nothing to publish")


@federation_witness.command("list")
def federation_witness_list() -> None:
    """The newest checkpoint of each origin this node verified, and any mismatch it saw."""
    from ..federation import witness

    rows = witness.listing(_runtime().db)
    if not rows:
        click.echo("no checkpoints held")
    for row in rows:
        click.echo(f"{row['origin']:<20} {row['count']} records up to {row['head_pk']} at {row['at']}"
                   + (f"  PROBLEM: {row['problem']}" if row["problem"] else "")
                   + (f"  STALE since {row['stale_since']}: no newer checkpoint arrived" if row["stale_since"] else ""))


@federation_witness.command("clear")
@click.argument("origin")
def federation_witness_clear(origin: str) -> None:
    """Forget what is held for ORIGIN (after its operator explained a mismatch); its next checkpoint starts afresh."""
    from ..federation import witness

    if not witness.clear(_runtime().db, origin):
        _fail(f"no checkpoint held for {origin}", 1)
    click.echo(f"cleared the checkpoint held for {origin}")


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
