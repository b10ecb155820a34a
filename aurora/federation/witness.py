"""Peers witness each other's audit log.

At every sync interval a node publishes the head of its audit chain (count, newest record's pk
and hash, time) as an ``audit.checkpoint`` event, signed like every event by its origin key, with
an *anchor*: what its log holds now at the head of the checkpoint it published before. A peer
keeps the newest checkpoint of each origin it verified; a later one that holds fewer records, a
different hash for the same count, or an anchor that does not match what the peer holds, shows
the origin's log was cut short or rewritten after the checkpoint: the peer records an
``audit.witness_mismatch`` event of its own and ``/health`` warns until an operator clears it.

A witness also notes when an origin's checkpoints stop reaching it (held back by a relay, or no
longer published): what it still hears of the origin — its events, or the origin itself answering
a pull — more than :data:`STALE_INTERVALS` sync intervals past the newest checkpoint held is
reported once as ``audit.witness_stale`` and warned of in ``/health`` until a fresh checkpoint is
taken. Nothing heard is no evidence: a peer that is down is reported as down, never as stale.

``aurora audit verify --witnesses`` on a node asks each peer (``GET /federation/witness/NODE``)
for the checkpoint it holds, checks the node's own signature on it, and verifies the local chain
against it: a log cut short is caught even when its own checkpoint file went with it.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .. import audit, events
from ..db import OUTBOX_LOCKS, Database
from ..models import AuditRecord, Event, utcnow
from . import fetch, identity, signing, vault
from .models import Node, WitnessCheckpoint

log = logging.getLogger(__name__)

CHECKPOINT = "audit.checkpoint"
MISMATCH = "audit.witness_mismatch"
STALE = "audit.witness_stale"
#: a witness warns when what it hears of an origin is this many sync intervals past the newest
#: checkpoint of it that it holds: an origin publishes one at every interval (``publish``), and it
#: may take an interval per hop to arrive (docs/federation.md, "stale checkpoints")
STALE_INTERVALS = 3
#: seconds ``aurora audit verify --witnesses`` waits for one peer (wall clock, the whole answer)
ASK_TIMEOUT = 10.0
#: the most bytes read of a peer's answer: one event of at most 64 KiB, and the envelope
ANSWER_BYTES = 2 * 65_536


# -- publishing (the origin) ------------------------------------------------------------------

def _head(session: Session) -> tuple[int, int | None, str]:
    count = session.scalar(select(func.count()).select_from(AuditRecord)) or 0
    newest = session.execute(select(AuditRecord.pk, AuditRecord.hash).order_by(AuditRecord.pk.desc()).limit(1)).first()
    return count, (newest.pk if newest else None), (newest.hash if newest else audit.GENESIS)


def _anchor(session: Session, previous: Event | None) -> dict[str, Any] | None:
    if previous is None or previous.data.get("head_pk") is None:
        return None
    pk = int(previous.data["head_pk"])
    record = session.get(AuditRecord, pk)
    return {"seq": previous.seq, "head_pk": pk, "head_hash": record.hash if record else None,
            "count": session.scalar(select(func.count()).select_from(AuditRecord).where(AuditRecord.pk <= pk)) or 0}


def _last_checkpoint_lost(settings: Any, db: Database) -> str | None:
    """Why the log no longer holds the head of this node's newest kept checkpoint, or None."""
    path = settings.audit_checkpoints_file
    try:
        last = audit.read_checkpoints(path, db.audit_key())[-1] if path.exists() and path.stat().st_size else None
    except (OSError, ValueError) as exc:
        return f"its checkpoints cannot be read: {exc}"
    if last is None or last["head_pk"] is None:
        return None
    with db.read() as session:
        head = session.get(AuditRecord, int(last["head_pk"]))
    if head is None or head.hash != last["head_hash"]:
        return f"record {last['head_pk']}, the head of the checkpoint of {last['created_at']}, is missing or changed"
    return None


def publish(runtime: Any, refresh_after: float | None = None) -> dict[str, Any] | None:
    """Publish this node's audit head as a checkpoint event, unless it is the one published last,
    less than ``refresh_after`` seconds ago (half a ``sync_interval`` unless told: so beat
    publishes one at every interval), and the log still holds this node's newest checkpoint.
    Returns the event's data, or None when nothing was published.

    An unchanged head is published again so that a witness can tell an origin whose log did not
    move from checkpoints that stopped reaching it (held back by a relay): it warns when none
    newer than :data:`STALE_INTERVALS` sync intervals arrives (``observe``)."""
    db, me = runtime.db, runtime.settings.node_name
    if refresh_after is None:
        refresh_after = float(runtime.policies.current().federation["sync_interval"]) / 2
    last = select(Event).where(Event.origin == me, Event.type == CHECKPOINT).order_by(Event.seq.desc()).limit(1)
    with db.read() as session:
        count, head_pk, head_hash = _head(session)
        previous = session.scalars(last).first()
    if previous is None and count == 0:
        return None
    problem = None
    if previous is not None and (previous.data.get("count"), previous.data.get("head_hash")) == (count, head_hash):
        # The same head as published last, but a log cut back to it (or to nothing) has lost what
        # beat's own checkpoints covered since: a witness must hear of it, once.
        problem = _last_checkpoint_lost(runtime.settings, db)
        recent = (utcnow() - previous.created_at).total_seconds() < refresh_after
        if problem is None or previous.data.get("problem") == problem[:255]:
            if recent:
                return None
        else:
            log.error("audit log does not hold its last checkpoint, published as is: %s", problem)
        problem = problem[:255] if problem else None
        head = {"count": count, "head_pk": head_pk, "head_hash": head_hash}
    else:
        try:  # verifies what came after this node's own last checkpoint, and keeps the new one
            head = audit.checkpoint_since_last(runtime.settings, db)
        except ValueError as exc:
            # This node's log no longer holds its own checkpoint: say so, and publish what it holds
            # now, so that the witnesses see it as well.
            problem = str(exc)[:255]
            log.error("audit log does not hold its last checkpoint, published as is: %s", problem)
            with db.read() as session:
                verdict = audit.verify(session.scalars(select(AuditRecord).order_by(AuditRecord.pk))
                                       .yield_per(1000), db.audit_key())
            head = {"count": verdict.count, "head_pk": verdict.head_pk, "head_hash": verdict.head_hash}
    with db.write() as session:
        db.lock(session, *OUTBOX_LOCKS)  # two publishers must not both anchor on the same one (and in
        # the order every writer takes them: aurora.db)
        previous = session.scalars(last).first()
        data: dict[str, Any] = {"count": int(head["count"]), "head_pk": head["head_pk"],
                                "head_hash": head["head_hash"], "created_at": utcnow().isoformat(),
                                "anchor": _anchor(session, previous)}
        if problem:
            data["problem"] = problem
        values = events.append(db, session, me, CHECKPOINT, data)
        # Signed now, after the chain was checked with the audit key, and served with this
        # signature only (``signing.served``): were it signed when served, as other events are,
        # anyone able to write to the database could add a checkpoint row covering a cut log and
        # have it go out under this node's signature.
        # the newest of this node's events of no run (ix_events_origin_seq_runless): this one
        row = session.scalars(select(Event).where(Event.origin == me, Event.run_pk.is_(None), Event.id == values["id"])
                              .order_by(Event.seq.desc()).limit(1)).one()
        row.origin_seq = row.seq
        row.signature = runtime.identity.sign(signing.canonical(row.id, me, row.seq, CHECKPOINT, None,
                                                                row.created_at, row.data))
    return data


# -- witnessing (the peers) -------------------------------------------------------------------

#: the largest count or record number a column holds (BIGINT)
_MAX = 2**63 - 1


def _number(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX


def _well_formed(data: Any) -> bool:
    # numbers beyond a BIGINT would make storing the page fail (and the sync with it)
    return (isinstance(data, dict) and _number(data.get("count"))
            and (data.get("head_pk") is None or _number(data["head_pk"]))
            and isinstance(data.get("head_hash"), str) and len(data["head_hash"]) <= 64)


def _problem(held: WitnessCheckpoint, data: dict[str, Any]) -> str | None:
    then = (f"its checkpoint of {fetch.said(held.event['data'].get('created_at'), 40)} held {held.count} records "
            f"up to record {held.head_pk}")
    now = f"now {data['count']} up to record {data.get('head_pk')}"
    if data["count"] < held.count or (data.get("head_pk") or 0) < (held.head_pk or 0):
        return f"cut short: {then}, {now}"
    if data["count"] == held.count and data["head_hash"] != held.head_hash:
        return f"rewritten: {then} with head {held.head_hash[:16]}, {now} with head {data['head_hash'][:16]}"
    anchor = data.get("anchor")
    if not isinstance(anchor, dict) or not isinstance(anchor.get("seq"), int):
        return f"its new checkpoint no longer links to the one this node holds: {then}"
    if anchor["seq"] == held.origin_seq and (anchor.get("head_hash"), anchor.get("count")) != (held.head_hash, held.count):
        return (f"rewritten or cut short: {then}; record {held.head_pk} now has "
                f"{'no record' if anchor.get('head_hash') is None else 'another hash'} ({anchor.get('count')} records up to it)")
    if anchor["seq"] < held.origin_seq:
        return f"its checkpoint events were removed: the new one links to an older one than {then}"
    own = data.get("problem")
    if own:
        # the origin itself found its log no longer holds a checkpoint it kept (one beat made
        # between two published ones): counts and anchor can look right when the log grew again
        return f"lost records its own checkpoint covered ({fetch.said(own, 200)}): {then}, {now}"
    return None


def observe(db: Database, session: Session, me: str, rows: list[dict[str, Any]],
            stale_after: timedelta | None = None) -> None:
    """Keep the checkpoints among verified foreign events (inside the transaction storing them),
    and, with ``stale_after``, note the origins whose events in ``rows`` were made that long after
    the newest checkpoint of theirs this node holds: their checkpoints stopped reaching it."""
    _observe_checkpoints(db, session, me, rows)
    if stale_after is None:
        return
    newest: dict[str, datetime] = {}
    for row in rows:
        if row["origin"] not in newest or row["created_at"] > newest[row["origin"]]:
            newest[row["origin"]] = row["created_at"]
    for origin, seen in newest.items():
        held = session.get(WitnessCheckpoint, origin)
        if held is not None:
            _overdue(db, session, me, held, seen, f"its events made up to {seen.isoformat()} did", stale_after)


def overdue_peer(db: Database, me: str, name: str, stale_after: timedelta) -> None:
    """After a pass that caught up with peer ``name``: a peer that answers, but whose newest
    checkpoint held here is ``stale_after`` old, publishes none (or none reaches this node)."""
    now = utcnow()
    with db.read() as session:
        held = session.get(WitnessCheckpoint, name)
        if held is None or held.problem is not None or held.problem_at is not None:
            return
        made = _made(held)
    if made is None or now - made <= stale_after:
        return
    with db.write() as session:
        db.lock(session, *OUTBOX_LOCKS)  # it records an event (in the order every writer takes them)
        held = session.get(WitnessCheckpoint, name)
        if held is not None:
            _overdue(db, session, me, held, now, f"{name} answered this node's pull at {now.isoformat()}", stale_after)


def _made(held: WitnessCheckpoint) -> datetime | None:
    """When the origin made the checkpoint held (the signed event's time, on its clock)."""
    try:
        return signing.parse_time(held.event["created_at"])
    except (KeyError, TypeError, ValueError):
        return None


def _overdue(db: Database, session: Session, me: str, held: WitnessCheckpoint, seen: datetime, evidence: str,
             stale_after: timedelta) -> None:
    if held.problem is not None or held.problem_at is not None:
        return  # already reported (a mismatch, or stale already)
    made = _made(held)
    if made is None or seen - made <= stale_after:
        return
    held.problem_at = utcnow()  # with no ``problem``: stale, until a fresh checkpoint is taken
    origin = held.origin
    message = (f"no audit checkpoint of {origin} newer than the one made at {made.isoformat()} ({held.count} records) "
               f"has arrived, though {fetch.said(evidence, 120)}: its checkpoints are held back on the way, or no "
               f"longer published")[:512]
    log.warning("witness: %s", message)
    events.append(db, session, me, STALE, {"origin": origin, "checkpoint_made_at": made.isoformat(),
                                           "seen": seen.isoformat(), "problem": message})


def _observe_checkpoints(db: Database, session: Session, me: str, rows: list[dict[str, Any]]) -> None:
    for row in sorted((r for r in rows if r["type"] == CHECKPOINT), key=lambda r: r["origin_seq"]):
        data, origin = row["data"], row["origin"]
        if not _well_formed(data):
            continue
        event = {k: (v.isoformat() if k == "created_at" else v) for k, v in row.items() if k != "seq"}
        held = session.get(WitnessCheckpoint, origin)
        if held is None:
            held = WitnessCheckpoint(origin=origin, origin_seq=row["origin_seq"], count=data["count"],
                                     head_pk=data.get("head_pk"), head_hash=data["head_hash"], event=event,
                                     received_at=utcnow())
            session.add(held)
            if data.get("problem"):  # the first one this node sees already says the log lost records
                _report(db, session, me, held, origin, f"says it lost records its own checkpoint covered "
                        f"({fetch.said(data['problem'], 200)})", data)
            continue
        if row["origin_seq"] <= held.origin_seq:
            # older, or the same one by another path; but another checkpoint under a number the
            # origin already signed one with means it numbers its events again from an earlier
            # state (its database was rolled back): later ones would be ignored here as "older"
            if held.problem is None and _number_reused(session, held, row):
                _report(db, session, me, held, origin, f"rolled back: it signed two checkpoints numbered "
                        f"{row['origin_seq']} (its events are numbered again from an earlier state)", data)
            continue
        anchor = data.get("anchor")
        linked = anchor.get("seq") if isinstance(anchor, dict) else None
        if isinstance(linked, int) and not isinstance(linked, bool) and linked > held.origin_seq:
            # It links to a checkpoint this node has not checked: a relay may have held back the
            # one that shows the cut. Check the missing links among the events stored here (they
            # may have come by another path); without them, keep what is held and wait for them.
            _catch_up(db, session, me, held, origin, row["origin_seq"])
            if held.origin_seq != linked:
                continue
        if _check(db, session, me, held, origin, row["origin_seq"], data, event):
            _catch_up(db, session, me, held, origin)  # any stored meanwhile that follow it (came early)


def _number_reused(session: Session, held: WitnessCheckpoint, row: dict[str, Any]) -> bool:
    """Whether a checkpoint other than ``row`` with its origin's number is held or stored here."""
    if row["origin_seq"] == held.origin_seq:
        return held.event.get("id") != row["id"]
    return session.scalar(select(Event.id).where(
        Event.origin == held.origin, Event.type == CHECKPOINT, Event.origin_seq == row["origin_seq"],
        Event.id != row["id"]).limit(1)) is not None


def _check(db: Database, session: Session, me: str, held: WitnessCheckpoint, origin: str, seq: int,
           data: dict[str, Any], event: dict[str, Any]) -> bool:
    """Hold the next checkpoint of ``origin``, or report what it shows; whether it was taken."""
    problem = _problem(held, data)
    if problem is None:
        held.origin_seq, held.count, held.head_pk, held.head_hash = seq, data["count"], data.get("head_pk"), data["head_hash"]
        held.event, held.received_at = event, utcnow()
        if held.problem is None:
            held.problem_at = None  # no longer stale (``_overdue``)
        return True
    if held.problem is None:  # the checkpoint that shows it stays held, as the evidence
        _report(db, session, me, held, origin, problem, data)
    return False


def _catch_up(db: Database, session: Session, me: str, held: WitnessCheckpoint, origin: str,
              before: int | None = None) -> None:
    """Walk the stored checkpoints of ``origin`` after the held one (and before ``before``), each
    linked to the one before it, as far as they go (``ix_events_checkpoints`` finds them)."""
    query = select(Event).where(Event.origin == origin, Event.type == CHECKPOINT, Event.origin_seq > held.origin_seq)
    if before is not None:
        query = query.where(Event.origin_seq < before)
    stored = session.scalars(query.order_by(Event.origin_seq))
    for e in stored:
        anchor = e.data.get("anchor") if isinstance(e.data, dict) else None
        if not _well_formed(e.data) or not isinstance(anchor, dict) or anchor.get("seq") != held.origin_seq:
            return  # a link is still missing
        event = {"id": e.id, "origin": e.origin, "type": e.type, "run_id": e.run_id,
                 "created_at": e.created_at.isoformat(), "data": e.data, "origin_seq": e.origin_seq,
                 "signature": e.signature}
        if not _check(db, session, me, held, origin, e.origin_seq, e.data, event):
            return


def _report(db: Database, session: Session, me: str, held: WitnessCheckpoint, origin: str, problem: str,
            data: dict[str, Any]) -> None:
    held.problem, held.problem_at = f"audit log of {origin} {problem}"[:512], utcnow()
    log.warning("witness: %s", held.problem)
    events.append(db, session, me, MISMATCH, {"origin": origin, "problem": held.problem,
                                              "held": {"count": held.count, "head_pk": held.head_pk,
                                                       "head_hash": held.head_hash},
                                              "seen": {k: data.get(k) for k in ("count", "head_pk", "head_hash")}})


def held(db: Database, origin: str) -> dict[str, Any]:
    with db.read() as session:
        row = session.get(WitnessCheckpoint, origin)
        if row is None:
            return {"checkpoint": None, "problem": None}
        return {"checkpoint": row.event, "received_at": row.received_at.isoformat(), "problem": row.problem,
                "problem_at": row.problem_at.isoformat() if row.problem_at and row.problem else None,
                "stale_since": row.problem_at.isoformat() if row.problem_at and row.problem is None else None}


def problems(db: Database) -> dict[str, str]:
    with db.read() as session:
        return dict(session.execute(select(WitnessCheckpoint.origin, WitnessCheckpoint.problem)
                                    .where(WitnessCheckpoint.problem.is_not(None))).all())


def stale(db: Database) -> dict[str, str]:
    """The origins whose newest checkpoint held here went stale (``_overdue``), each said."""
    with db.read() as session:
        rows = session.scalars(select(WitnessCheckpoint).where(WitnessCheckpoint.problem.is_(None),
                                                               WitnessCheckpoint.problem_at.is_not(None)))
        return {w.origin: f"no checkpoint newer than the one made at {w.event.get('created_at')} "
                          f"(stale since {w.problem_at.isoformat()})" for w in rows}


def listing(db: Database) -> list[dict[str, Any]]:
    with db.read() as session:
        return [{"origin": w.origin, "count": w.count, "head_pk": w.head_pk, "head_hash": w.head_hash,
                 "at": w.event["data"].get("created_at"), "received_at": w.received_at.isoformat(),
                 "problem": w.problem,
                 "stale_since": w.problem_at.isoformat() if w.problem_at and w.problem is None else None}
                for w in session.scalars(select(WitnessCheckpoint).order_by(WitnessCheckpoint.origin))]


def clear(db: Database, origin: str) -> bool:
    """Forget what is held for ``origin`` (after its operator explained the mismatch)."""
    with db.write() as session:
        row = session.get(WitnessCheckpoint, origin)
        if row is None:
            return False
        session.delete(row)
        audit.note(db, session, "federation", "witness_clear", {"origin": origin, "problem": row.problem})
    return True


# -- asking the witnesses (the origin) --------------------------------------------------------

def ask(runtime: Any) -> list[dict[str, Any]]:
    """What each enabled peer holds of this node: its checkpoint (checked against this node's own
    key) or the reason it could not be had."""
    me = runtime.identity
    with runtime.db.read() as session:
        peers = [(n.name, n.url, n.token) for n in session.scalars(select(Node).where(Node.enabled.is_(True)).order_by(Node.name))]
    answers = []
    for name, url, stored in peers:
        answer: dict[str, Any] = {"peer": name}
        try:
            token = vault.open_token(runtime.settings.federation_secret_path, stored)
            # a sync's limits: a peer trickling its answer, or sending an endless one, must not
            # hold this command past ASK_TIMEOUT nor fill its memory
            status, body = fetch.get_json(f"{url}/federation/witness/{me.name}", {"Authorization": f"Bearer {token}"},
                                          ANSWER_BYTES, time.monotonic() + ASK_TIMEOUT)
        except (fetch.FederationFetchError, vault.VaultError) as exc:
            answers.append({**answer, "error": str(exc)})
            continue
        if not isinstance(body, dict):
            answers.append({**answer, "error": f"HTTP {status}" + ("" if status != 200 else ": not a JSON object")})
            continue
        # the peer's words, written out: a terminal must not take them for this command's own
        answer["problem"] = None if body.get("problem") is None else fetch.said(body["problem"], 512)
        event = body.get("checkpoint")
        if event is None:
            answers.append(answer)
            continue
        try:
            genuine = (event["origin"] == me.name and event["type"] == CHECKPOINT and _well_formed(event["data"])
                       and identity.valid(me.private.public_key(), event["signature"], signing.canonical(
                           event["id"], event["origin"], event["origin_seq"], event["type"], event["run_id"],
                           signing.parse_time(event["created_at"]), event["data"])))
        except (KeyError, TypeError, ValueError):
            genuine = False
        if genuine:
            answer["checkpoint"] = event["data"]
        else:
            answer["error"] = "holds a checkpoint this node did not sign"
        answers.append(answer)
    return answers


def verify(runtime: Any, answers: list[dict[str, Any]]) -> audit.Verdict:
    """The local chain against its own checkpoints and those its witnesses hold."""
    settings, db = runtime.settings, runtime.db
    key = db.audit_key()
    local = settings.audit_checkpoints_file
    checkpoints = audit.read_checkpoints(local, key) if local.exists() else []
    checkpoints += [a["checkpoint"] for a in answers if a.get("checkpoint") and a["checkpoint"].get("head_pk") is not None]
    with db.read() as session:
        return audit.verify_all(session, key, checkpoints)
