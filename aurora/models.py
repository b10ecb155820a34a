"""SQLAlchemy 2 models: the database is the source of truth for every run.

Timestamps are timezone-aware UTC. JSON columns hold documents, results and event data.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    case,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")


#: a JSON column whose None is SQL NULL, not the text ``null`` (SQLAlchemy's default); both read back as None
NULLABLE_JSON = JSON(none_as_null=True)


#: each partial index's condition (the same in SQLite and PostgreSQL), handed to the dialect a
#: database is opened with (``describe_partial_indexes``): naming both dialects on the ``Index``
#: (``postgresql_where=``) makes SQLAlchemy load PostgreSQL's dialect in every process to check the
#: option, ~3.5 MB of resident memory in each of the embedded stack's five SQLite processes
PARTIAL_INDEXES: dict[Index, str] = {}


def partial(index: Index, where: str) -> Index:
    """``index``, covering only the rows for which ``where`` holds (as the migrations create it)."""
    PARTIAL_INDEXES[index] = where
    return index


def describe_partial_indexes(dialect: str) -> None:
    """Give the partial indexes their condition in ``dialect``, for Alembic's comparisons
    (aurora/migrations/env.py); the migrations build the same indexes."""
    for index, where in PARTIAL_INDEXES.items():
        index.dialect_options[dialect]["where"] = text(where)


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """A DateTime that always comes back timezone-aware in UTC (SQLite forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class RunStatus(enum.StrEnum):
    """Where a run is in its life. Final statuses never change again."""

    QUEUED = "queued"
    RUNNING = "running"
    AWAITING_APPROVAL = "awaiting_approval"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    #: a live call may have reached the provider and its outcome is unknown: a person (or the
    #: provider's signed webhook) decides; never acted on again by a worker
    NEEDS_RECONCILIATION = "needs_reconciliation"
    #: a critical run the policy means to act live that would only have been simulated (outside
    #: the canary share, rolled back, no secrets): nothing was sent; ``error`` says why and what
    #: to do (``aurora.outcomes``)
    NOT_ACTED = "not_acted"
    #: a step of a workflow that did not run: its ``if:`` was false, or a step it needs did not
    #: succeed (``error`` says which)
    SKIPPED = "skipped"

    @property
    def final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset(
    {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.REJECTED, RunStatus.EXPIRED, RunStatus.CANCELLED,
     RunStatus.NEEDS_RECONCILIATION, RunStatus.NOT_ACTED, RunStatus.SKIPPED}
)


class Role(enum.StrEnum):
    """What an API key may do."""

    ADMIN = "admin"
    SUBMITTER = "submitter"
    APPROVER = "approver"
    VIEWER = "viewer"


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, datetime: UTCDateTime}


class Run(Base):
    """One submitted workflow and everything that happened to it."""

    __tablename__ = "runs"

    pk: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    #: unique; on PostgreSQL in a ``text_pattern_ops`` index (``ux_runs_id``, migration
    #: 0016_pgpath), which serves both ``id = …`` and the CLI's ``id LIKE 'prefix%'``
    id: Mapped[str] = mapped_column(String(36), unique=True)
    name: Mapped[str] = mapped_column(String(128))
    goal: Mapped[str] = mapped_column(String(32))
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    document_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(32))
    #: the step the run is in, or last finished: route, gate, act
    step: Mapped[str | None] = mapped_column(String(16))
    approvals_required: Mapped[int] = mapped_column(Integer, default=0)
    result: Mapped[dict[str, Any] | None] = mapped_column(NULLABLE_JSON)
    error: Mapped[dict[str, Any] | None] = mapped_column(NULLABLE_JSON)
    #: the key that submitted the run (its name)
    submitted_by: Mapped[str] = mapped_column(String(64))
    #: the person that key belongs to: none of their keys may approve the run
    submitted_by_person: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    gate_deadline: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: what approvers are asked to approve, as the worker rendered it when the run stopped at its
    #: gate: the exact (redacted) request, its mode and reason, and their hash (aurora.binding)
    approval_binding: Mapped[dict[str, Any] | None] = mapped_column(NULLABLE_JSON)
    #: for charges: what the money did after the action (pending, succeeded, failed), from webhooks
    settlement: Mapped[str | None] = mapped_column(String(16))
    #: a step of a workflow of several steps (``aurora.flow_runs``): the workflow's run, the
    #: step's id and which attempt of it this is; the workflow's own run has the inputs
    parent_id: Mapped[str | None] = mapped_column(String(36))
    step_id: Mapped[str | None] = mapped_column(String(64))
    step_attempt: Mapped[int | None] = mapped_column(Integer)
    inputs: Mapped[dict[str, Any] | None] = mapped_column(NULLABLE_JSON)
    #: the stored definition and version the run was started from (``aurora.definitions``)
    definition: Mapped[str | None] = mapped_column(String(128))
    definition_version: Mapped[int | None] = mapped_column(Integer)
    #: where ``aurora prune`` put this run's document, steps and events (None: not pruned)
    archive: Mapped[str | None] = mapped_column(String(512))

    __table_args__ = (
        Index("ix_runs_status_pk", "status", "pk"),
        Index("ix_runs_goal_pk", "goal", "pk"),
        Index("ix_runs_name_pk", "name", "pk"),
        # partial (migration 0014_bytes): most runs are neither a step nor from a definition
        partial(Index("ux_runs_parent_step", "parent_id", "step_id", "step_attempt", unique=True), "parent_id IS NOT NULL"),
        partial(Index("ix_runs_definition_pk", "definition", "pk"), "definition IS NOT NULL"),
    )


class RunStep(Base):
    """One pipeline step of one run; a finished step is never run again.

    A step names its run by the run's ``pk`` (since migration 0014_bytes; before, by its id): a
    run's three steps and their index held its 36-character id six times. The run and the step
    are the primary key (since 0016_pgpath; before, a surrogate ``pk`` had an index of its own)."""

    __tablename__ = "run_steps"

    run_pk: Mapped[int] = mapped_column(BigInteger, ForeignKey("runs.pk", ondelete="CASCADE"), primary_key=True)
    step: Mapped[str] = mapped_column(String(16), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))  # started | done
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    result: Mapped[dict[str, Any] | None] = mapped_column(NULLABLE_JSON)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


#: a run's steps in the order they ran (``ORDER BY``; a dry run's three start at one instant)
RUN_STEPS_IN_ORDER = (RunStep.started_at, case({"route": 0, "gate": 1, "act": 2}, value=RunStep.step, else_=3))


class Approval(Base):
    """One vote on one run, bound to the hash of the request and mode it approved. Append-only.

    ``voter`` is the key's name, ``person`` the person who holds it: quorum counts people.
    """

    __tablename__ = "approvals"

    pk: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    voter: Mapped[str] = mapped_column(String(64))
    decision: Mapped[str] = mapped_column(String(16))  # approve | reject
    comment: Mapped[str | None] = mapped_column(Text)
    channel: Mapped[str] = mapped_column(String(16))  # api | cli | web
    document_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    person: Mapped[str | None] = mapped_column(String(64))
    #: aurora.binding hash of the rendered request and its mode this vote approved (None: cast
    #: before migration 0007, never counts)
    request_hash: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (UniqueConstraint("run_id", "voter", "request_hash", name="uq_approvals_key_request"),)


class Event(Base):
    """Something that happened, in local order (``seq``); federated peers pull these."""

    __tablename__ = "events"

    seq: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(36))
    origin: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(64))
    run_id: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: for this node's events of one of its runs, that run's ``pk`` (set by ``events.append``; a
    #: foreign event has none): a run's events are found by it, in an index a third the size of
    #: one on the 36-character ``run_id`` (migration 0014_bytes)
    run_pk: Mapped[int | None] = mapped_column(BigInteger)
    #: for a foreign event, its origin's seq and Ed25519 signature as received (relayed unchanged);
    #: this node's own events are signed when served (``federation/signing.py``)
    origin_seq: Mapped[int | None] = mapped_column(BigInteger)
    signature: Mapped[str | None] = mapped_column(String(88))

    #: only ids that can meet again are unique (migration 0014_bytes): a foreign event pulled twice,
    #: a Typeform response taken in twice; this node's other events have random ids. (The index
    #: in the database also holds every event stored before 0014: ``OR seq <= <the last then>``.)
    UNIQUE_WHERE = "origin_seq IS NOT NULL OR type = 'typeform.response'"

    __table_args__ = (
        partial(Index("ux_events_origin_id", "origin", "id", unique=True), UNIQUE_WHERE),
        partial(Index("ix_events_run_pk", "run_pk"), "run_pk IS NOT NULL"),
        # the events of no run of this node: a peer's, and this node's checkpoints and form
        # responses; what reads events by origin looks for (they say ``run_pk IS NULL``: 0016_pgpath)
        partial(Index("ix_events_origin_seq_runless", "origin", "seq"), "run_pk IS NULL"),
        # checkpoint rows only (a witness looks them up by the origin's seq: federation/witness.py)
        partial(Index("ix_events_checkpoints", "origin", "origin_seq"), "type = 'audit.checkpoint'"),
    )


class AuditRecord(Base):
    """One adapter call, simulated or live. Append-only and hash-chained."""

    __tablename__ = "audit_records"

    pk: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    run_id: Mapped[str | None] = mapped_column(String(36), index=True)
    adapter: Mapped[str] = mapped_column(String(32))
    operation: Mapped[str] = mapped_column(String(64))
    mode: Mapped[str] = mapped_column(String(16))  # simulated | live
    reason: Mapped[str] = mapped_column(String(255))
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    outcome: Mapped[str] = mapped_column(String(16))  # ok | error
    response: Mapped[dict[str, Any] | None] = mapped_column(NULLABLE_JSON)
    duration_ms: Mapped[float] = mapped_column(default=0.0)
    prev_hash: Mapped[str] = mapped_column(String(64))
    #: not unique in the database since migration 0014_bytes: each is an HMAC over the one before
    hash: Mapped[str] = mapped_column(String(64))


class MetricTally(Base):
    """A count /metrics reports, kept up to date from the append-only logs (aurora.tallies)
    instead of counted over all history at every scrape."""

    __tablename__ = "metric_tallies"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    #: the label values, tab-separated ("" for a high-water mark)
    labels: Mapped[str] = mapped_column(String(255), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)


class Person(Base):
    """Someone who holds keys. The role is the person's: every key of theirs acts with it."""

    __tablename__ = "people"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ApiKey(Base):
    """A caller's key: only its SHA-256 is stored; ``key_id`` is the public prefix used to look it up.

    ``role`` is a copy of the person's role, kept for versions before migration 0007; Aurora reads
    the person's.
    """

    __tablename__ = "api_keys"

    pk: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    key_id: Mapped[str] = mapped_column(String(16), unique=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    person: Mapped[str | None] = mapped_column(String(64), index=True)


class ProcessHeartbeat(Base):
    """The last sign of life of a worker or beat process, for ``/health``."""

    __tablename__ = "process_heartbeats"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # worker | beat
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class EngineHealth(Base):
    """Recent failures of one AI engine, shared by every process; drives cool-down and fallback."""

    __tablename__ = "engine_health"

    engine: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    cooldown_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(String(255))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AdapterState(Base):
    """An adapter's live rollout: promoted past its canary, or rolled back after a live failure."""

    __tablename__ = "adapter_states"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    promoted: Mapped[bool] = mapped_column(default=False)
    rolled_back_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    rollback_reason: Mapped[str | None] = mapped_column(String(255))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class FormCursor(Base):
    """Where the last Typeform ingest of a form stopped (the token of its last response)."""

    __tablename__ = "form_cursors"

    form_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    after: Mapped[str | None] = mapped_column(String(128))
    ingested: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ExternalRef(Base):
    """A provider's id for something a run made (a PaymentIntent, a mail), to find the run again."""

    __tablename__ = "external_refs"

    provider: Mapped[str] = mapped_column(String(32), primary_key=True)
    ref: Mapped[str] = mapped_column(String(255), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(36), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebhookReceipt(Base):
    """One provider callback taken in: its id (or replay token) is unique, so a retry changes nothing."""

    __tablename__ = "webhook_receipts"

    provider: Mapped[str] = mapped_column(String(32), primary_key=True)
    external_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(64))
    run_id: Mapped[str | None] = mapped_column(String(36))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class IdempotencyKey(Base):
    """A client's ``Idempotency-Key`` for one submission: the same key again finds the same run."""

    __tablename__ = "idempotency_keys"

    owner: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    #: the submitted document's digest: the same key with another document is refused
    request_hash: Mapped[str] = mapped_column(String(64))
    run_id: Mapped[str] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class WebSession(Base):
    """A sign-in on the approval page. The cookie carries a random id; only its SHA-256 is here,
    so logout (deleting the row) and revoking the key end the session on the server."""

    __tablename__ = "web_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class Definition(Base):
    """A stored workflow definition: its current version and whether its triggers act."""

    __tablename__ = "definitions"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    #: the webhook trigger's secret, sealed (``aurora.sealed``): a database dump does not reveal it
    webhook_secret: Mapped[str | None] = mapped_column(Text)
    #: the scheduled firings up to this time have been looked at (``aurora.triggers``)
    schedule_checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DefinitionVersion(Base):
    """One version of a definition: the workflow and its ``on:`` triggers, and their hash."""

    __tablename__ = "definition_versions"

    pk: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(Integer)
    digest: Mapped[str] = mapped_column(String(64))
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("name", "version", name="uq_definition_versions_name_version"),)


# The federation's tables (peers, their keys, witnessed checkpoints, tokens) live beside the code
# that uses them; imported here so that every table is on ``Base.metadata`` (Alembic, create_all).
from .federation import models as _federation_models  # noqa: E402, F401
