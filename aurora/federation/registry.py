"""The peers this node pulls from. Their tokens are secrets: nothing here ever returns them, and
they are stored encrypted (``vault.py``). Registering a peer pins its public key (``trust.py``)."""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from .. import audit
from ..db import Database
from ..errors import Conflict, NotFound
from ..models import utcnow
from . import fetch, identity, trust, vault
from .models import FederationKey, Node

NAME = identity.NAME


class BadNode(Conflict):
    """Raised when a node's name or URL cannot be used."""

    code = "bad_node"
    http_status = 400


class KeyChanged(Conflict):
    """Raised when a peer being registered again shows another key than the one pinned."""

    code = "key_changed"


#: seconds to wait for a peer's ``GET /federation/identity`` (wall clock, the whole answer)
IDENTITY_TIMEOUT = 10.0
#: the most bytes read of it
IDENTITY_BYTES = 16_384


def fetch_identity(url: str) -> dict[str, str]:
    """A peer's name and public key, from its ``GET /federation/identity``, with a sync's limits
    (a wall-clock deadline, a byte cap, no redirects)."""
    try:
        status, body = fetch.get_json(f"{url.rstrip('/')}/federation/identity", {}, IDENTITY_BYTES,
                                      time.monotonic() + IDENTITY_TIMEOUT)
    except fetch.FederationFetchError as exc:
        raise BadNode(f"could not read {url.rstrip('/')}/federation/identity ({exc}); "
                      "give the peer's key with --public-key") from None
    if not isinstance(body, dict) or not isinstance(body.get("public_key"), str):
        raise BadNode(f"{url.rstrip('/')}/federation/identity did not answer with a public key "
                      f"(HTTP {status}); give the peer's key with --public-key")
    try:
        identity.decode(body["public_key"])
    except ValueError as exc:
        raise BadNode(f"the peer's public key is unusable: {exc}") from None
    return {"node": str(body.get("node", "")), "public_key": body["public_key"],
            "fingerprint": identity.fingerprint(body["public_key"])}


def pinned_key(db: Database, name: str) -> str | None:
    with db.read() as session:
        row = trust.pinned(session, name)
        return row.public_key if row else None


def register(db: Database, url: str, name: str, token: str, *, public_key: str, secret_path: Path,
             repin: bool = False) -> None:
    """Add a peer, or update its URL and token (re-registration rotates the token we present),
    pinning ``public_key`` as the key of origin ``name``. A different key than the one already
    pinned is refused unless ``repin`` (the operator confirmed the peer's new key)."""
    if not NAME.match(name):
        raise BadNode(f"node name {name!r} must be letters, digits, _ . - (at most 64)")
    if not re.match(r"^https?://[^\s/]+", url):
        raise BadNode(f"node URL {url!r} must start with http:// or https://")
    if len(token) < 16:
        raise BadNode("the peer's token is too short to be one of Aurora's tokens")
    if len(token) > 512:
        raise BadNode("the peer's token is longer than 512 characters: not one of Aurora's tokens")
    try:
        identity.decode(public_key)
    except ValueError as exc:
        raise BadNode(f"public key of {name}: {exc}") from None
    sealed = vault.seal(secret_path, token)
    with db.write() as session:
        before = trust.pinned(session, name)
        if before is not None and before.public_key != public_key and not repin:
            raise KeyChanged(f"{name} now shows the key {identity.fingerprint(public_key)}, not the pinned "
                             f"{identity.fingerprint(before.public_key)}; if its operator confirms the new key, "
                             "register it again with --public-key KEY")
        node = session.get(Node, name)
        if node is None:
            session.add(Node(name=name, url=url.rstrip("/"), token=sealed, enabled=True, cursor=0,
                             remote_last_seq=0, failures=0, created_at=utcnow()))
        else:
            node.url, node.token, node.enabled = url.rstrip("/"), sealed, True
        trust.pin(session, name, public_key)
        # who this node trusts is a decision to keep: the peer, its URL and key, never the token
        audit.note(db, session, "federation", "node_register", {"node": name, "url": url.rstrip("/"),
                                                                 "fingerprint": identity.fingerprint(public_key)})


def remove(db: Database, name: str) -> None:
    """Stop pulling from ``name``. Its pinned key stays: forgotten, the next relay to mention
    ``name`` could introduce a key of its own for it and have events forged in its name stored;
    registering it again with another key needs ``--public-key``, as for any pinned node."""
    with db.write() as session:
        node = session.get(Node, name)
        if node is None:
            raise NotFound(f"no node {name!r}")
        session.delete(node)
        audit.note(db, session, "federation", "node_remove", {"node": name})


def state(node: Node, interval: float, now: datetime) -> str:
    """healthy: heard from lately, no failures; degraded: failing, or late; down: silent for long."""
    if node.last_success is None:
        return "down" if node.failures else "new"
    age = now - node.last_success
    if node.failures >= 3 or age > timedelta(seconds=interval * 6):
        return "down"
    if node.failures or age > timedelta(seconds=interval * 2):
        return "degraded"
    return "healthy"


def listing(db: Database, interval: float) -> list[dict[str, Any]]:
    now = utcnow()
    with db.read() as session:
        nodes = session.scalars(select(Node).order_by(Node.name)).all()
        pins = {k.origin: k.public_key for k in session.scalars(select(FederationKey)
                                                                .where(FederationKey.source == trust.PINNED))}
    return [
        {"name": n.name, "url": n.url, "enabled": n.enabled, "state": state(n, interval, now),
         "last_seen": n.last_seen.isoformat() if n.last_seen else None,
         "last_success": n.last_success.isoformat() if n.last_success else None,
         "cursor": n.cursor, "lag": max(n.remote_last_seq - n.cursor, 0), "failures": n.failures,
         "last_error": n.last_error,
         "fingerprint": identity.fingerprint(pins[n.name]) if n.name in pins else None,
         "rejected": n.rejected or {}, "last_rejection": n.last_rejection,
         "next_attempt_at": n.next_attempt_at.isoformat() if n.next_attempt_at else None}
        for n in nodes
    ]
