"""Approval gates: pure functions over the approval ledger of one run.

A vote counts only if it was cast for the run's current *binding* — the hash of the exact request
the adapter will send and its mode (``aurora.binding``) — with a key that is still valid, by a
person other than the submitter's; each person counts once, whichever of their keys voted; one
rejection ends the run.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass


class GateState(enum.StrEnum):
    OPEN = "open"  # enough approvals (or none needed): the run may act
    WAITING = "waiting"  # not enough approvals yet
    REJECTED = "rejected"  # somebody said no


@dataclass(frozen=True)
class Vote:
    voter: str  # the key's name
    decision: str  # approve | reject
    request_hash: str | None  # what it approved (None: cast before votes were bound to requests)
    person: str = ""  # who holds the key (defaults to the key's name)
    #: why the vote no longer counts (its key was revoked, its person removed), or None
    void: str | None = None

    @property
    def who(self) -> str:
        return self.person or self.voter


@dataclass(frozen=True)
class GateDecision:
    state: GateState
    required: int
    approvers: tuple[str, ...]  # people
    rejected_by: str | None = None

    @property
    def missing(self) -> int:
        return max(self.required - len(self.approvers), 0)

    def as_dict(self) -> dict[str, object]:
        return {
            "state": self.state.value,
            "required": self.required,
            "received": len(self.approvers),
            "missing": self.missing,
            "approvers": list(self.approvers),
            "rejected_by": self.rejected_by,
        }


def counts(vote: Vote, request_hash: str | None, submitter: str) -> bool:
    """Whether a vote counts towards the gate of a run bound to ``request_hash``."""
    return (request_hash is not None and vote.request_hash == request_hash and vote.void is None
            and vote.who != submitter)


def evaluate(required: int, votes: Iterable[Vote], request_hash: str | None, submitter: str) -> GateDecision:
    """The gate's state given every vote cast so far; ``submitter`` is the submitter's person."""
    approvers: list[str] = []
    for vote in votes:
        if not counts(vote, request_hash, submitter):
            continue
        if vote.decision == "reject":
            return GateDecision(GateState.REJECTED, required, tuple(approvers), rejected_by=vote.who)
        if vote.who not in approvers:
            approvers.append(vote.who)
    state = GateState.OPEN if len(approvers) >= required else GateState.WAITING
    return GateDecision(state, required, tuple(approvers))
