"""Which key speaks for which origin: pinned when a node is registered here, or introduced by a
pinned peer that relays an origin this node never registered (trust on first introduction).

A pin always wins: registering a node pins its key over any introduced one, and an introduction
never replaces a key this node already holds, so a peer cannot swap the key of an origin it relays.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..db import Database, insert_ignoring_conflicts
from ..models import utcnow
from . import identity, signing
from .models import FederationKey

PINNED, INTRODUCED = "pinned", "introduced"


def known(db: Database) -> dict[str, str]:
    with db.read() as session:
        return dict(session.execute(select(FederationKey.origin, FederationKey.public_key)).all())


def pinned(session: Session, origin: str) -> FederationKey | None:
    row = session.get(FederationKey, origin)
    return row if row is not None and row.source == PINNED else None


def pin(session: Session, origin: str, public_key: str) -> None:
    identity.decode(public_key)
    row = session.get(FederationKey, origin)
    if row is None:
        session.add(FederationKey(origin=origin, public_key=public_key, source=PINNED, created_at=utcnow()))
    else:
        row.public_key, row.source, row.introduced_by = public_key, PINNED, None


def learn(session: Session, learned: dict[str, str], by: str, dialect: str) -> None:
    """Keep keys first introduced by ``by`` in this page, unless another was learned meanwhile
    (a concurrent sync's insert wins; no error)."""
    if not learned:
        return
    session.execute(insert_ignoring_conflicts(dialect, FederationKey.__table__, index_elements=["origin"]), [
        {"origin": origin, "public_key": public_key, "source": INTRODUCED, "introduced_by": by,
         "created_at": utcnow()} for origin, public_key in learned.items()])


def current(session: Session, origins: Iterable[str]) -> dict[str, str]:
    """The keys held now for ``origins`` (in the caller's transaction)."""
    wanted = sorted(set(origins))
    if not wanted:
        return {}
    return dict(session.execute(select(FederationKey.origin, FederationKey.public_key)
                                .where(FederationKey.origin.in_(wanted))).all())


def introductions(db: Database, me: identity.Identity, origins: Iterable[str]) -> dict[str, Any]:
    """For a page served to a peer: the keys of the other origins in it, each signed by this node."""
    wanted = sorted(set(origins) - {me.name})
    if not wanted:
        return {}
    with db.read() as session:
        rows = session.execute(select(FederationKey.origin, FederationKey.public_key)
                               .where(FederationKey.origin.in_(wanted))).all()
    return {origin: {"public_key": key, "signature": me.sign(signing.introduction(origin, key, me.name))}
            for origin, key in rows}


def listing(db: Database) -> list[dict[str, Any]]:
    with db.read() as session:
        return [{"origin": k.origin, "public_key": k.public_key, "fingerprint": identity.fingerprint(k.public_key),
                 "source": k.source, "introduced_by": k.introduced_by, "since": k.created_at.isoformat()}
                for k in session.scalars(select(FederationKey).order_by(FederationKey.origin))]
