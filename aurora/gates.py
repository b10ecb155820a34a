"""Approval gates: pure functions over the approval ledger of one run.

A vote counts only if it was cast for the run's current document hash, by someone other than
the submitter; each person counts once; one rejection ends the run.
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
    voter: str
    decision: str  # approve | reject
    document_hash: str


@dataclass(frozen=True)
class GateDecision:
    state: GateState
    required: int
    approvers: tuple[str, ...]
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


def evaluate(required: int, votes: Iterable[Vote], document_hash: str, submitter: str) -> GateDecision:
    """The gate's state given every vote cast so far."""
    approvers: list[str] = []
    for vote in votes:
        if vote.document_hash != document_hash or vote.voter == submitter:
            continue
        if vote.decision == "reject":
            return GateDecision(GateState.REJECTED, required, tuple(approvers), rejected_by=vote.voter)
        if vote.voter not in approvers:
            approvers.append(vote.voter)
    state = GateState.OPEN if len(approvers) >= required else GateState.WAITING
    return GateDecision(state, required, tuple(approvers))
