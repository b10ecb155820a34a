"""The approval ledger as the gate reads it: votes with their person and whether they still count.

Shared by the worker's gate (``Engine._gate``) and the vote itself (``aurora.approvals``), so both
count the same votes: a vote of a revoked key, or of a removed person, is void; a vote bound to
another rendering of the request (``aurora.binding``) does not count for this one.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from . import events, gates
from .binding import bind
from .models import ApiKey, Approval, Person

__all__ = ["bind", "rebind", "submitter", "votes"]

_VOTES = (
    select(Approval.voter, Approval.decision, Approval.request_hash,
           func.coalesce(Approval.person, Approval.voter).label("person"),
           ApiKey.revoked_at, Person.removed_at)
    .outerjoin(ApiKey, ApiKey.name == Approval.voter)
    .outerjoin(Person, Person.name == func.coalesce(Approval.person, Approval.voter))
    .order_by(Approval.pk)
)


def votes(session: Any, run_id: str) -> list[gates.Vote]:
    """Every vote on a run, oldest first, each marked void if its key or person is gone."""
    out = []
    for row in session.execute(_VOTES.where(Approval.run_id == run_id)):
        void = None
        if row.removed_at is not None:
            void = f"person {row.person!r} was removed"
        elif row.revoked_at is not None:
            void = f"key {row.voter!r} was revoked"
        out.append(gates.Vote(row.voter, row.decision, row.request_hash, row.person, void))
    return out


def submitter(run: Any) -> str:
    """The person who submitted a run (runs stored before 0007: the key's name)."""
    return run.submitted_by_person or run.submitted_by


def rebind(db: Any, session: Any, node: str, run: Any, binding: dict[str, Any], ledger: list[gates.Vote]) -> None:
    """Tell the run's timeline when a new rendering of its request voids earlier votes."""
    old = run.approval_binding or {}
    if old.get("hash") == binding["hash"]:
        return
    stale = [v for v in ledger if v.void is None and v.request_hash == old.get("hash") and v.request_hash != binding["hash"]]
    if not stale:
        return
    changed = [k for k in ("request", "mode", "reason", "engines") if old.get(k) != binding.get(k)]
    events.append(db, session, node, "approval.voided", {
        "reason": "what the run would send, or whether it is live, changed after these votes: "
                  + ", ".join(changed or ["request"]) + "; approvers are asked again",
        "voters": [v.voter for v in stale], "people": sorted({v.who for v in stale}),
        "mode": binding["mode"], "was_mode": old.get("mode"), "request_hash": binding["hash"],
    }, run_id=run.id)
