"""People: who holds which keys, and what happens to their votes when a key or person goes.

The role lives on the person (as GitHub's and Windmill's do): every key of a person acts with the
person's role, so "alice" is one approver however many keys (laptop, phone, CI) she holds, and a
person cannot hold an approver key beside a submitter key to approve their own runs. Quorum
counts distinct people (``aurora.gates``); a key's name is only how its votes are shown.

Revoking a key, or removing a person (which revokes all their keys), makes their votes on runs
that have not acted stop counting: the gate ignores votes of revoked keys (``aurora.approvals``
loads them with their key's state), the run's timeline gets an ``approval.voided`` event, and the
approvers of a waiting run are asked again (``ask_again``). A run that quorum had sent to the queue
is stopped at its gate again by the worker, which asks them itself. The last admin — the last
active key of a person with the admin role — can never be revoked or removed: nobody could make
keys afterwards.
"""

from __future__ import annotations

import socket
from typing import Any

from sqlalchemy import func, or_, select

from . import audit, events
from .db import Database
from .errors import Conflict, NotFound
from .keys import forget_verified
from .models import ApiKey, Approval, Person, Role, Run, RunStatus, utcnow

#: statuses in which a run has not acted yet (``running`` only before its act step begins)
NOT_ACTED = (RunStatus.AWAITING_APPROVAL.value, RunStatus.QUEUED.value, RunStatus.RUNNING.value)


class LastAdmin(Conflict):
    """Raised when revoking a key or removing a person would leave no admin key."""

    code = "last_admin"


def listing(db: Database) -> list[dict[str, Any]]:
    """Every person with their role and keys (active and revoked), oldest first."""
    with db.read() as session:
        people = list(session.scalars(select(Person).order_by(Person.created_at, Person.name)))
        keys = list(session.scalars(select(ApiKey).order_by(ApiKey.pk)))
    out = []
    for person in people:
        held = [k for k in keys if (k.person or k.name) == person.name]
        out.append({
            "name": person.name, "role": person.role, "created_at": person.created_at.isoformat(),
            "removed_at": person.removed_at.isoformat() if person.removed_at else None,
            "keys": [{"name": k.name, "key_id": k.key_id,
                      "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None} for k in held],
        })
    return out


def _admin_keys_left(session: Any, without: set[str]) -> int:
    """Active keys of active admin people, other than ``without``; locks them on PostgreSQL so
    two revocations at once cannot both take the last two (SQLite's writer holds the database)."""
    query = (select(ApiKey.name).outerjoin(Person, Person.name == ApiKey.person)
             .where(func.coalesce(Person.role, ApiKey.role) == Role.ADMIN.value, ApiKey.revoked_at.is_(None),
                    Person.removed_at.is_(None)))
    if session.bind.dialect.name == "postgresql":
        query = query.with_for_update(of=ApiKey)
    return len([name for name in session.scalars(query) if name not in without])


def _void_votes(db: Database, session: Any, node: str, key_names: list[str], why: str) -> list[str]:
    """Append ``approval.voided`` to each run that has not acted and holds votes of these keys;
    return the ids of those runs."""
    rows = session.execute(
        select(Approval.run_id, Approval.voter, Approval.person, Approval.decision).join(Run, Run.id == Approval.run_id)
        .where(Approval.voter.in_(key_names), Run.status.in_(NOT_ACTED),
               or_(Run.status != RunStatus.RUNNING.value, Run.step.is_(None), Run.step != "act"))
        .order_by(Approval.pk)).all()
    touched: list[str] = []
    for row in rows:
        events.append(db, session, node, "approval.voided",
                      {"voter": row.voter, "person": row.person, "decision": row.decision, "reason": why},
                      run_id=row.run_id)
        if row.run_id not in touched:
            touched.append(row.run_id)
    return touched


def revoke_key(db: Database, name: str, node: str | None = None) -> list[str]:
    """Revoke one key; return the runs whose votes from it stopped counting."""
    try:
        return _revoke_key(db, name, node or socket.gethostname())
    finally:
        forget_verified(db)  # this process at once; the others within AURORA_KEY_CACHE_SECONDS


def _revoke_key(db: Database, name: str, node: str) -> list[str]:
    with db.write() as session:
        # the row the gate that begins an act reads FOR SHARE (ledger.votes): a revocation waits
        # for an act being begun, or the gate waits for it and sees it (never a revoked vote counting)
        key = session.scalar(select(ApiKey).where(ApiKey.name == name).with_for_update())
        if key is None:
            raise NotFound(f"no key named {name!r}")
        if key.revoked_at is not None:
            return []
        holder = session.get(Person, key.person) if key.person else None
        if (holder.role if holder else key.role) == Role.ADMIN.value and not _admin_keys_left(session, {name}):
            raise LastAdmin(f"{name!r} is the last admin key: make another admin first "
                            "(aurora keys create NAME --role admin), then revoke this one")
        key.revoked_at = utcnow()
        audit.note(db, session, "keys", "revoke", {"name": name, "role": key.role, "key_id": key.key_id,
                                                   "person": key.person})
        return _void_votes(db, session, node, [name], f"key {name!r} was revoked")


def remove_person(db: Database, name: str, node: str | None = None) -> list[str]:
    """Remove a person and revoke all their keys; return the runs whose votes stopped counting."""
    try:
        return _remove_person(db, name, node or socket.gethostname())
    finally:
        forget_verified(db)


def _remove_person(db: Database, name: str, node: str) -> list[str]:
    with db.write() as session:
        person = session.get(Person, name, with_for_update=True)  # as revoke_key: the gate's rows
        if person is None:
            raise NotFound(f"no person named {name!r}")
        if person.removed_at is not None:
            return []
        held = list(session.scalars(select(ApiKey).where(func.coalesce(ApiKey.person, ApiKey.name) == name)
                                    .order_by(ApiKey.pk).with_for_update()))
        if person.role == Role.ADMIN.value and not _admin_keys_left(session, {k.name for k in held}):
            raise LastAdmin(f"{name!r} is the last admin: make another admin first "
                            "(aurora keys create NAME --role admin), then remove this person")
        now = utcnow()
        person.removed_at = now
        for key in held:
            if key.revoked_at is None:
                key.revoked_at = now
        audit.note(db, session, "people", "remove", {"name": name, "keys": [k.name for k in held]})
        return _void_votes(db, session, node, [k.name for k in held], f"person {name!r} was removed")


def ask_again(engine: Any, run_ids: list[str]) -> None:
    """Mail the approvers of each run that still waits for votes (``approvals.notify``)."""
    from .adapters import CallContext
    from .approvals import notify

    if not run_ids:
        return
    with engine.db.read() as session:
        waiting = list(session.scalars(select(Run.id).where(
            Run.id.in_(run_ids), Run.status == RunStatus.AWAITING_APPROVAL.value)))
    policy = engine.policies.current()
    for run_id in waiting:
        notify(engine, run_id, CallContext(run_id, policy, engine.secrets()), again=True)
