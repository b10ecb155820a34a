"""The audit log: one append-only record per adapter call and per decision a person made.

Each record's ``hash`` is an HMAC-SHA256, keyed with the audit key (``audit_key.py``, a file
outside the database), of the previous record's hash and the record's content. Someone who can
write the database but does not hold the key can neither edit a record nor recompute the chain
after an edit or a deletion: :func:`verify` names the first record that does not match.

Deleting the newest records leaves a shorter chain that is still consistent, so the chain alone
cannot show it. A *checkpoint* — the count and the hash of the newest record, signed with the
same key — kept outside the database (a file, a ticket, a peer) closes that gap: a log that no
longer holds the checkpoint's head was cut short.

Besides adapter calls the chain holds votes, key changes and adapter promotions, enables and
rollbacks (:func:`note`, mode ``ledger``), and :func:`verify_all` checks the approvals table
against the votes in the chain, so a vote edited in SQL is found as well.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import BigInteger, Connection, or_, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.functions import FunctionElement

from . import audit_key
from .db import AUDIT_LOCK_KEY as AUDIT_LOCK_KEY  # its home was here
from .db import OUTBOX_LOCKS, Database, connection_of
from .errors import AuditKeyError
from .frozen_holders import be_patient
from .models import Approval, AuditRecord, utcnow

#: the ``prev_hash`` of the first record
GENESIS = "0" * 64
#: the mode of records that are not adapter calls (votes, key changes, rollouts)
LEDGER_MODE = "ledger"
#: keeps a checkpoint's signature from ever being taken for a record's hash, and vice versa
_CHECKPOINT_DOMAIN = b"aurora-audit-checkpoint-v1\n"
_TABLE = AuditRecord.__table__
_INSERT = _TABLE.insert().inline()  # the key is given (:func:`chain`): nothing to read back


class _next_pk(FunctionElement[int]):
    """The primary key the next record gets: handed out with the chain head (:data:`_HEAD`), so
    the INSERT carries its key and needs no ``RETURNING`` (an INSERT whose result nobody reads
    can be sent in a pipeline with the rest of the transaction: ``Database.batch``). Read under
    the outbox locks, so keys grow in the order of the chain, as they did when the INSERT took them."""

    type = BigInteger()
    name = "aurora_next_audit_pk"
    inherit_cache = True


@compiles(_next_pk)
def _next_pk_sqlite(_element: Any, _compiler: Any, **_kw: Any) -> str:
    # SQLite (its writer holds the database): what an INTEGER PRIMARY KEY without AUTOINCREMENT
    # would have taken itself
    return "(SELECT coalesce(max(pk), 0) + 1 FROM audit_records)"


@compiles(_next_pk, "postgresql")
def _next_pk_postgresql(_element: Any, _compiler: Any, **_kw: Any) -> str:
    # the column's own sequence, found by the column (not by a name that a migration could change)
    return "nextval(pg_get_serial_sequence('audit_records', 'pk'))"


#: the newest record's hash (none: the chain is empty) and the next record's primary key
_HEAD = select(select(_TABLE.c.hash).order_by(_TABLE.c.pk.desc()).limit(1).scalar_subquery(), _next_pk())


def _content(record: Any) -> dict[str, Any]:
    """What a record's hash covers; ``record`` is a row or a dict of its fields."""
    get = record.get if isinstance(record, dict) else lambda name: getattr(record, name)
    return {
        "created_at": get("created_at").isoformat(),
        "run_id": get("run_id"),
        "adapter": get("adapter"),
        "operation": get("operation"),
        "mode": get("mode"),
        "reason": get("reason"),
        "request": get("request"),
        "outcome": get("outcome"),
        "response": get("response"),
        "duration_ms": round(get("duration_ms"), 3),
    }


def _canonical(record: Any) -> str:
    return json.dumps(_content(record), sort_keys=True, separators=(",", ":"), default=str)


def _seal(key: bytes, prev_hash: str, canonical: str) -> str:
    return hmac.new(key, (prev_hash + canonical).encode("utf-8"), hashlib.sha256).hexdigest()


def record_hash(prev_hash: str, record: Any, key: bytes) -> str:
    """The hash a record must carry: HMAC-SHA256 under the audit key."""
    return _seal(key, prev_hash, _canonical(record))


def _unkeyed_hash(prev_hash: str, record: Any) -> str:
    """The hash of the chain before it was keyed; only used to explain what verify found."""
    return hashlib.sha256((prev_hash + _canonical(record)).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Prepared:
    """A record's fields and the canonical text its hash covers, made before any transaction:
    appending then only chains it to the newest record."""

    fields: dict[str, Any]
    canonical: str


def prepare(**fields: Any) -> Prepared:
    """``fields`` must already be redacted: nothing here knows what a secret looks like."""
    fields.setdefault("created_at", utcnow())
    fields["duration_ms"] = round(float(fields.get("duration_ms", 0.0)), 3)
    return Prepared(fields, _canonical(fields))


def append(db: Database, session: Session | Connection, prepared: Prepared | None = None, **fields: Any) -> dict[str, Any]:
    """Add one record, chained to the newest one, to the session's transaction; return its values.

    Give either a record made by :func:`prepare` or its ``fields`` (already redacted).
    """
    values = chain(db, session, prepared or prepare(**fields))
    insert(session, values)
    return values


def chain(db: Database, session: Session | Connection, prepared: Prepared) -> dict[str, Any]:
    """Take the outbox locks, read the chain's head and seal ``prepared`` onto it: the values of
    the record, its primary key among them, for :func:`insert` in the same transaction."""
    key = db.audit_key()  # before the lock: the first call may create the key file
    db.lock(session, *OUTBOX_LOCKS)  # with the events' lock: see aurora.events
    prev, pk = connection_of(session).execute(_HEAD).one()
    prev = prev or GENESIS
    return {**prepared.fields, "pk": pk, "prev_hash": prev, "hash": _seal(key, prev, prepared.canonical)}


def insert(session: Session | Connection, values: dict[str, Any]) -> None:
    """Insert a record :func:`chain` sealed. Nothing is read back: it may run in a batch."""
    connection_of(session).execute(_INSERT, values)


def note(db: Database, session: Session | Connection, subject: str, operation: str, details: dict[str, Any],
         run_id: str | None = None, reason: str = "") -> dict[str, Any]:
    """Record a decision that is not an adapter call (a vote, a key change, a rollout step)."""
    return append(db, session, run_id=run_id, adapter=subject, operation=operation, mode=LEDGER_MODE,
                  reason=reason[:255], request=details, outcome="ok", response=None, duration_ms=0.0)


def note_vote(db: Database, session: Session, approval: Approval) -> None:
    """Put a vote into the chain; ``approval`` must be flushed (its pk is what ties the two)."""
    note(db, session, "approvals", "vote", {
        "approval": approval.pk, "voter": approval.voter, "decision": approval.decision,
        "comment": approval.comment, "channel": approval.channel, "document_hash": approval.document_hash,
        "person": approval.person, "request_hash": approval.request_hash,
    }, run_id=approval.run_id, reason=f"{approval.voter} voted {approval.decision}")


# -- checkpoints ------------------------------------------------------------------------------

def _checkpoint_signature(key: bytes, body: dict[str, Any]) -> str:
    text = json.dumps({k: v for k, v in body.items() if k != "signature"}, sort_keys=True, separators=(",", ":"))
    return hmac.new(key, _CHECKPOINT_DOMAIN + text.encode("utf-8"), hashlib.sha256).hexdigest()


def sign_checkpoint(key: bytes, node: str, count: int, head_pk: int | None, head_hash: str) -> dict[str, Any]:
    body: dict[str, Any] = {"version": 1, "node": node, "count": count, "head_pk": head_pk,
                            "head_hash": head_hash, "created_at": utcnow().isoformat()}
    return {**body, "signature": _checkpoint_signature(key, body)}


def parse_checkpoint(key: bytes, text: str) -> dict[str, Any]:
    """A checkpoint read back; ValueError when it is malformed or not signed with this key."""
    try:
        body = json.loads(text)
    except json.JSONDecodeError:
        raise ValueError("not a JSON checkpoint") from None
    if not isinstance(body, dict) or not {"count", "head_pk", "head_hash", "signature"} <= body.keys():
        raise ValueError("not an audit checkpoint (count, head_pk, head_hash, signature)")
    if not isinstance(body["signature"], str) or not hmac.compare_digest(  # bytes: a non-ASCII str raises
            body["signature"].encode("utf-8", "replace"), _checkpoint_signature(key, body).encode()):
        raise ValueError("its signature does not match this node's audit key (edited, or another key)")
    return body


# -- verifying --------------------------------------------------------------------------------

class Verdict(NamedTuple):
    intact: bool
    #: pk of the first bad record (or of the first missing one after a truncation)
    bad_pk: int | None
    why: str
    count: int = 0
    head_pk: int | None = None
    head_hash: str = GENESIS


@dataclass
class _Walk:
    wanted: dict[int, dict[str, Any]] = field(default_factory=dict)
    votes: dict[int, dict[str, Any]] = field(default_factory=dict)


def verify(records: Iterable[AuditRecord], key: bytes, checkpoints: Sequence[dict[str, Any]] = (),
           _walk: _Walk | None = None) -> Verdict:
    """Walk the chain in order; it must hold every checkpoint's head where the checkpoint saw it."""
    walk = _walk or _Walk()
    for cp in checkpoints:
        if cp["head_pk"] is not None:
            walk.wanted.setdefault(int(cp["head_pk"]), cp)
    prev, count, head_pk = GENESIS, 0, None
    for record in records:
        if record.prev_hash != prev:
            return Verdict(False, record.pk, "a record before it was changed or deleted", count, head_pk, prev)
        if record_hash(prev, record, key) != record.hash:
            why = ("it is not sealed with this node's audit key (written before the chain was keyed, "
                   "or recomputed by someone without the key)"
                   if _unkeyed_hash(prev, record) == record.hash else "its content does not match its hash")
            return Verdict(False, record.pk, why, count, head_pk, prev)
        count += 1
        cp = walk.wanted.pop(record.pk, None)
        if cp is not None and (cp["head_hash"] != record.hash or int(cp["count"]) != count):
            return Verdict(False, record.pk, f"it differs from the checkpoint of {cp.get('created_at')} "
                                             f"(record {cp['count']} of the log then)", count, head_pk, prev)
        if record.mode == LEDGER_MODE and record.adapter == "approvals" and record.operation == "vote":
            walk.votes[int(record.request["approval"])] = {**record.request, "run_id": record.run_id}
        prev, head_pk = record.hash, record.pk
    if walk.wanted:
        pk, cp = min(walk.wanted.items())
        first_missing = (head_pk or 0) + 1
        return Verdict(False, first_missing,
                       f"the log was cut short: the checkpoint of {cp.get('created_at')} holds {cp['count']} records "
                       f"up to record {pk}, the log now ends at record {head_pk} ({count} records)",
                       count, head_pk, prev)
    return Verdict(True, None, "intact", count, head_pk, prev)


def _vote_fields(approval: Approval) -> dict[str, Any]:
    return {"approval": approval.pk, "voter": approval.voter, "decision": approval.decision,
            "comment": approval.comment, "channel": approval.channel,
            "document_hash": approval.document_hash, "run_id": approval.run_id,
            "person": approval.person, "request_hash": approval.request_hash}


def verify_all(session: Session, key: bytes, checkpoints: Sequence[dict[str, Any]] = ()) -> Verdict:
    """The chain, and the approvals table against the votes the chain holds.

    Approvals older than the first vote in the chain that are bound to no request were cast before
    votes were recorded there (and never count at a gate): they cannot be checked. Every other
    approval must be in the chain, exactly as it is there.
    """
    walk = _Walk()
    verdict = verify(session.scalars(select(AuditRecord).order_by(AuditRecord.pk)).yield_per(1000),
                     key, checkpoints, walk)
    if not verdict.intact:
        return verdict
    # A vote bound to a request (the only kind the gate counts) was always chained: one outside
    # the chain was put there in SQL, whatever its pk (a pk below the first chained vote, or any
    # pk while the chain holds no vote yet, was never looked at).
    checked = Approval.request_hash.is_not(None)
    if walk.votes:
        checked = or_(checked, Approval.pk >= min(walk.votes))
    for approval in session.scalars(select(Approval).where(checked).order_by(Approval.pk)):
        recorded = walk.votes.pop(approval.pk, None)
        if recorded is None:
            return verdict._replace(intact=False, bad_pk=None,
                                    why=f"approval {approval.pk} (run {approval.run_id}) is not in the audit chain")
        if recorded != _vote_fields(approval):
            changed = sorted(k for k in recorded if recorded[k] != _vote_fields(approval).get(k))
            return verdict._replace(intact=False, bad_pk=None,
                                    why=f"approval {approval.pk} (run {approval.run_id}) differs from its vote "
                                        f"in the audit chain: {', '.join(changed)}")
    if walk.votes:
        pk = min(walk.votes)
        return verdict._replace(intact=False, bad_pk=None,
                                why=f"approval {pk} (run {walk.votes[pk]['run_id']}) is in the audit chain "
                                    "but was deleted from the approvals table")
    return verdict


def read_checkpoints(path: Path, key: bytes) -> list[dict[str, Any]]:
    """Every checkpoint in a file (one JSON object a line); ValueError naming the bad line."""
    found = []
    for number, line in enumerate(path.read_text("utf-8").splitlines(), 1):
        if line.strip():
            try:
                found.append(parse_checkpoint(key, line))
            except ValueError as exc:
                raise ValueError(f"{path}, line {number}: {exc}") from None
    return found


def verify_node(settings: Any, db: Database, checkpoint_files: Sequence[Path] = ()) -> Verdict:
    """What ``aurora audit verify`` and ``aurora doctor`` report: the chain under this node's key,
    against the checkpoints it keeps (``settings.audit_checkpoints_file``) and any others given."""
    key = audit_key.load(settings.audit_key_path)
    if key is None:
        with db.read() as session:
            empty = session.scalar(select(AuditRecord.pk).limit(1)) is None
        if empty:
            return Verdict(True, None, "intact (no records yet)")
        raise AuditKeyError(f"the audit key {settings.audit_key_path} is missing: restore it from its backup "
                            "(without it the chain cannot be checked)")
    checkpoints: list[dict[str, Any]] = []
    local = settings.audit_checkpoints_file
    for path in ([local] if local.exists() else []) + list(checkpoint_files):
        try:
            checkpoints += read_checkpoints(path, key)
        except (OSError, ValueError) as exc:
            return Verdict(False, None, f"checkpoint {exc}")
    with db.read() as session:
        return verify_all(session, key, checkpoints)


def keep_checkpoint(path: Path, checkpoint: dict[str, Any]) -> None:
    """Append a checkpoint to a file of them (one JSON line each, mode 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as out:
        out.write(json.dumps(checkpoint, sort_keys=True) + "\n")


def checkpoint_since_last(settings: Any, db: Database) -> dict[str, Any]:
    """Beat's checkpoint: verify only what came after the newest kept checkpoint (whose head must
    still be there, unchanged), then sign and keep the new head. ValueError when it does not hold:
    nothing is signed over a broken or shortened chain."""
    key = db.audit_key()
    path = settings.audit_checkpoints_file
    last = read_checkpoints(path, key)[-1] if path.exists() and path.stat().st_size else None
    with db.read() as session:
        if last is None or last["head_pk"] is None:
            verdict = verify(session.scalars(select(AuditRecord).order_by(AuditRecord.pk)).yield_per(1000), key)
        else:
            head = session.get(AuditRecord, int(last["head_pk"]))
            if head is None or head.hash != last["head_hash"]:
                raise ValueError(f"record {last['head_pk']}, the head of the checkpoint of {last['created_at']}, "
                                 "is missing or changed")
            newer = session.scalars(select(AuditRecord).where(AuditRecord.pk > head.pk)
                                    .order_by(AuditRecord.pk)).yield_per(1000)
            verdict = _verify_from(newer, key, last["head_hash"], int(last["count"]), head.pk)
    if not verdict.intact:
        raise ValueError(f"record {verdict.bad_pk}: {verdict.why}")
    checkpoint = sign_checkpoint(key, settings.node_name, verdict.count, verdict.head_pk, verdict.head_hash)
    keep_checkpoint(path, checkpoint)
    return checkpoint


def _verify_from(records: Iterable[AuditRecord], key: bytes, prev: str, count: int, head_pk: int | None) -> Verdict:
    for record in records:
        if record.prev_hash != prev:
            return Verdict(False, record.pk, "a record before it was changed or deleted", count, head_pk, prev)
        if record_hash(prev, record, key) != record.hash:
            return Verdict(False, record.pk, "its content does not match its hash", count, head_pk, prev)
        prev, count, head_pk = record.hash, count + 1, record.pk
    return Verdict(True, None, "intact", count, head_pk, prev)


def reseal(db: Database) -> int:
    """Re-seal a chain written before it was keyed: check every record under the old, unkeyed
    hash (or, after them, the key), then rewrite every hash with the key. Returns the number of
    records, or ValueError naming the first record that does not verify.

    Run once after upgrading. It trusts what the unkeyed chain says, so run it before anyone who
    should not could have written the database since — it cannot tell an old edit from the truth.
    """
    key = db.audit_key()
    with db.write() as session:
        db.lock(session, *OUTBOX_LOCKS)
        be_patient(db, session)  # its passes over a long chain say nothing for a while: not frozen
        rows = list(session.scalars(select(AuditRecord).order_by(AuditRecord.pk)))
        prev, keyed = GENESIS, False
        for record in rows:
            if record.prev_hash != prev:
                raise ValueError(f"record {record.pk}: a record before it was changed or deleted")
            if record_hash(prev, record, key) == record.hash:
                keyed = True
            elif keyed or _unkeyed_hash(prev, record) != record.hash:
                raise ValueError(f"record {record.pk}: its content does not match its hash")
            prev = record.hash
        # Two passes: hashes are unique, and a new hash must never meet an old one mid-way.
        sealed, prev = [], GENESIS
        for record in rows:
            new = record_hash(prev, record, key)
            sealed.append((record, prev, new))
            prev = new
        for record, _, _ in sealed:
            record.hash = f"resealing-{record.pk}"
        session.flush()
        for record, prev_hash, new in sealed:
            record.prev_hash, record.hash = prev_hash, new
    return len(rows)


def as_dict(record: AuditRecord) -> dict[str, Any]:
    return {"pk": record.pk, **_content(record), "prev_hash": record.prev_hash, "hash": record.hash}
