"""The peers this node pulls from. Their tokens are secrets: nothing here ever returns them."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from .. import audit
from ..db import Database
from ..errors import Conflict, NotFound
from ..models import Node, utcnow

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class BadNode(Conflict):
    """Raised when a node's name or URL cannot be used."""

    code = "bad_node"
    http_status = 400


def register(db: Database, url: str, name: str, token: str) -> None:
    """Add a peer, or update its URL and token (re-registration rotates the token we present)."""
    if not NAME.match(name):
        raise BadNode(f"node name {name!r} must be letters, digits, _ . - (at most 64)")
    if not re.match(r"^https?://[^\s/]+", url):
        raise BadNode(f"node URL {url!r} must start with http:// or https://")
    if len(token) < 16:
        raise BadNode("the peer's token is too short to be one of Aurora's tokens")
    with db.write() as session:
        node = session.get(Node, name)
        if node is None:
            session.add(Node(name=name, url=url.rstrip("/"), token=token, enabled=True, cursor=0,
                             remote_last_seq=0, failures=0, created_at=utcnow()))
        else:
            node.url, node.token, node.enabled = url.rstrip("/"), token, True
        # who this node trusts is a decision to keep: the peer and its URL, never the token
        audit.note(db, session, "federation", "node_register", {"node": name, "url": url.rstrip("/")})


def remove(db: Database, name: str) -> None:
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
    return [
        {"name": n.name, "url": n.url, "enabled": n.enabled, "state": state(n, interval, now),
         "last_seen": n.last_seen.isoformat() if n.last_seen else None,
         "last_success": n.last_success.isoformat() if n.last_success else None,
         "cursor": n.cursor, "lag": max(n.remote_last_seq - n.cursor, 0), "failures": n.failures,
         "last_error": n.last_error,
         "next_attempt_at": n.next_attempt_at.isoformat() if n.next_attempt_at else None}
        for n in nodes
    ]
