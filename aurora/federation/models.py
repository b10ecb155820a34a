"""The federation's tables: the peers this node pulls from, the origins' public keys, the
checkpoints it witnesses, and the tokens peers present (registered on :class:`aurora.models.Base`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from ..models import Base, BigIntPK, UTCDateTime, utcnow


class Node(Base):
    """A peer this node pulls events from. ``token`` is the peer's, presented when pulling,
    encrypted with the key under AURORA_HOME (``federation/vault.py``)."""

    __tablename__ = "nodes"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    url: Mapped[str] = mapped_column(String(512))
    token: Mapped[str] = mapped_column(String(1024))
    enabled: Mapped[bool] = mapped_column(default=True)
    cursor: Mapped[int] = mapped_column(BigInteger, default=0)
    remote_last_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    last_seen: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_success: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(String(255))
    failures: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sync_owner: Mapped[str | None] = mapped_column(String(128))
    sync_lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: events from this peer refused, by reason (own_origin, unknown_origin, bad_signature)
    rejected: Mapped[dict[str, int] | None] = mapped_column(JSON)
    last_rejection: Mapped[str | None] = mapped_column(String(255))


class FederationKey(Base):
    """An origin's Ed25519 public key: pinned when its node was registered here, or introduced
    by a pinned peer that relays its events (trust on first introduction; a pin always wins)."""

    __tablename__ = "federation_keys"

    origin: Mapped[str] = mapped_column(String(64), primary_key=True)
    public_key: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(16))  # pinned | introduced
    introduced_by: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WitnessCheckpoint(Base):
    """The newest audit checkpoint an origin published that this node verified, kept as a
    witness; ``problem`` says when a later one showed the origin's log cut short or rewritten."""

    __tablename__ = "witness_checkpoints"

    origin: Mapped[str] = mapped_column(String(64), primary_key=True)
    origin_seq: Mapped[int] = mapped_column(BigInteger)
    count: Mapped[int] = mapped_column(BigInteger)
    head_pk: Mapped[int | None] = mapped_column(BigInteger)
    head_hash: Mapped[str] = mapped_column(String(64))
    #: the whole signed event, so the origin can check what its witness holds
    event: Mapped[dict[str, Any]] = mapped_column(JSON)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    problem: Mapped[str | None] = mapped_column(String(512))
    problem_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class FederationToken(Base):
    """A token this node accepts from one peer. Two may be valid at once, for rotation."""

    __tablename__ = "federation_tokens"

    pk: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    peer: Mapped[str] = mapped_column(String(64), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
