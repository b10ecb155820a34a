"""Federation endpoints: peers pull signed events with a token; anyone may read this node's
public key; admins and peers see the node registry and the audit checkpoints held as a witness."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request
from sqlalchemy import select

from .. import keys
from ..errors import AuthError, PermissionDenied
from ..federation import registry, signing, tokens, trust, witness
from ..models import Event, Role
from .auth import presented_key
from .params import int_arg

bp = Blueprint("federation", __name__)

#: the most events one page carries
MAX_PAGE = 1000
#: RFC 9745: ``?token=`` has been deprecated since 2026-12-01 (the header is a structured date)
TOKEN_QUERY_DEPRECATED = "@1796083200"


class FederationDisabled(PermissionDenied):
    """Raised when a peer pulls while the policy says ``federation_enabled: false``."""

    code = "federation_disabled"


def _runtime() -> Any:
    return current_app.extensions["aurora"]


def _pull_token() -> str | None:
    """The token of a peer pulling ``/federation/events``. The seed's ``?token=`` is accepted
    here, and only here (its curl pulled events, nothing else), answered with a Deprecation
    header; Aurora's request log never records query strings, so the token is not written anywhere."""
    header = presented_key()
    if header:
        return header
    query = request.args.get("token")
    if query:
        g.federation_token_in_query = True
    return query


@bp.after_request
def _deprecation(response: Response) -> Response:
    if g.get("federation_token_in_query"):
        response.headers["Deprecation"] = TOKEN_QUERY_DEPRECATED
        response.headers["Warning"] = '299 - "?token= is deprecated: send Authorization: Bearer TOKEN"'
    return response


def _admin_or_peer(runtime: Any) -> None:
    # the header only: ``?token=`` (a peer token or an admin key in a URL) is refused here
    presented = presented_key()
    if presented is None and "token" in request.args:
        raise AuthError("?token= is accepted on /federation/events only (deprecated there): "
                        "send 'Authorization: Bearer <token>'")
    try:
        keys.authenticate(runtime.db, presented).require(Role.ADMIN)
    except AuthError as exc:
        if isinstance(exc, PermissionDenied) or not (presented or "").startswith(tokens.PREFIX):
            raise
        tokens.peer_for(runtime.db, presented)


@bp.get("/federation/identity")
def node_identity() -> Response:
    """This node's name and public key, for peers to pin (compare the fingerprint out of band)."""
    return jsonify(_runtime().identity.as_dict())


@bp.get("/federation/events")
def pull() -> Response:
    runtime = _runtime()
    peer = tokens.peer_for(runtime.db, _pull_token())
    fed = runtime.policies.current().federation
    if not fed["enabled"]:
        raise FederationDisabled("federation is disabled on this node (federation_enabled is false in its policy)")
    if peer not in fed["nodes"]:
        raise PermissionDenied(f"peer {peer!r} is not named in this node's federation_nodes")
    since = int_arg("since", 0, 0, 2**62, clamp=True)
    limit = int_arg("limit", 100, 1, MAX_PAGE, clamp=True)
    me = runtime.identity
    # rows, not ORM objects: a page is up to a thousand events, each read, signed and sent once
    columns = [getattr(Event, name) for name in signing.SERVED_COLUMNS]
    with runtime.db.read() as session:
        rows = session.execute(select(*columns).where(Event.seq > since).order_by(Event.seq).limit(limit + 1)).all()
    more = len(rows) > limit
    window = rows[:limit]
    # The peer's own events are not sent back to it (it holds them): a node that is sent events
    # claiming its own origin knows they are not genuine, and counts them.
    mine = [row for row in window if row.origin != peer]
    return jsonify({"node": runtime.settings.node_name, "events": signing.served(me, mine),
                    "keys": trust.introductions(runtime.db, me, {row.origin for row in mine}),
                    "last_seq": window[-1].seq if window else since, "has_more": more})


@bp.get("/federation/nodes")
def nodes() -> Response:
    runtime = _runtime()
    _admin_or_peer(runtime)
    interval = float(runtime.policies.current().federation["sync_interval"])
    return jsonify({"node": runtime.settings.node_name, "nodes": registry.listing(runtime.db, interval)})


@bp.get("/federation/witness/<origin>")
def witnessed(origin: str) -> Response:
    """The newest audit checkpoint of ``origin`` this node verified and keeps, as the signed
    event it came in (``aurora audit verify --witnesses`` on that origin asks for it)."""
    runtime = _runtime()
    _admin_or_peer(runtime)
    return jsonify({"node": runtime.settings.node_name, "origin": origin, **witness.held(runtime.db, origin)})
