"""Federation endpoints: peers pull events with a token; admins and peers see the node registry."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from sqlalchemy import select

from .. import events, keys
from ..errors import AuthError, PermissionDenied
from ..federation import registry, tokens
from ..models import Event, Role
from .auth import presented_key
from .params import int_arg

bp = Blueprint("federation", __name__)

#: the most events one page carries
MAX_PAGE = 1000


class FederationDisabled(PermissionDenied):
    """Raised when a peer pulls while the policy says ``federation_enabled: false``."""

    code = "federation_disabled"


def _runtime() -> Any:
    return current_app.extensions["aurora"]


def _token() -> str | None:
    # The seed's ?token= is accepted too; Aurora's request log never records query strings.
    return presented_key() or request.args.get("token")


@bp.get("/federation/events")
def pull() -> Response:
    runtime = _runtime()
    peer = tokens.peer_for(runtime.db, _token())
    fed = runtime.policies.current().federation
    if not fed["enabled"]:
        raise FederationDisabled("federation is disabled on this node (federation_enabled is false in its policy)")
    if peer not in fed["nodes"]:
        raise PermissionDenied(f"peer {peer!r} is not named in this node's federation_nodes")
    since = int_arg("since", 0, 0, 2**62, clamp=True)
    limit = int_arg("limit", 100, 1, MAX_PAGE, clamp=True)
    with runtime.db.read() as session:
        rows = list(session.scalars(select(Event).where(Event.seq > since).order_by(Event.seq).limit(limit + 1)))
    more = len(rows) > limit
    items = [events.as_dict(e) for e in rows[:limit]]
    return jsonify({"node": runtime.settings.node_name, "events": items,
                    "last_seq": items[-1]["seq"] if items else since, "has_more": more})


@bp.get("/federation/nodes")
def nodes() -> Response:
    runtime = _runtime()
    presented = _token()
    try:
        keys.authenticate(runtime.db, presented).require(Role.ADMIN)
    except AuthError as exc:
        if isinstance(exc, PermissionDenied) or not (presented or "").startswith(tokens.PREFIX):
            raise
        tokens.peer_for(runtime.db, presented)
    interval = float(runtime.policies.current().federation["sync_interval"])
    return jsonify({"node": runtime.settings.node_name, "nodes": registry.listing(runtime.db, interval)})
