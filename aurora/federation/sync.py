"""Pull peers' events: after the stored cursor, a page at a time; each page's events and the new
cursor commit in one transaction, so a sync killed at any moment resumes without loss or
duplicates. Every event must carry its origin's valid signature (``signing.py``): events claiming
this node's origin, an origin whose key is not known, or a bad signature are refused and counted
per peer; events already held (origin + id) are skipped, which carries A's events A → B → C and
never back to A. One sync per peer runs at a time across
all processes (a lease on the peer's row); failures back off with jitter, a success resets them.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update

from .. import logs, metrics
from ..db import insert_ignoring_conflicts
from ..engine import worker_identity
from ..events import OUTBOX_LOCKS
from ..models import Event, utcnow
from . import signing, trust, vault, witness
from .fetch import FederationFetchError, Peer
from .models import Node
from .prefetch import Prefetcher

#: the first backoff after a failure, doubled per further failure (with jitter), up to the policy's max
BACKOFF_BASE = 30.0


class BadPage(Exception):
    """Raised (and turned into a recorded failure) when a peer's answer is not a page of events."""


#: the largest sequence number a column holds (BIGINT, SQLite's INTEGER)
MAX_SEQ = 2**63 - 1


def _parse_time(value: str) -> datetime:
    when = datetime.fromisoformat(value)
    if when.tzinfo is None:
        raise ValueError("naive time")
    when.astimezone(UTC)  # OverflowError for a time that is before year 1 or after 9999 in UTC
    return when


def _text(value: Any, size: int) -> str:
    # NUL is not text to PostgreSQL, and a lone surrogate is not UTF-8: refused here, not by the
    # database in the middle of storing the page
    text = str(value)[:size]
    if "\x00" in text:
        raise ValueError("NUL in a text field")
    text.encode("utf-8")
    return text


def _seq(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEQ:
        raise ValueError("a sequence number is an integer from 0 to 2**63 - 1")
    return value


def _validate(body: Any) -> tuple[list[dict[str, Any]], int, bool]:
    """The page's events as rows, or BadPage: anything this node's database could not hold is
    refused here (the whole page, as for any malformed event), so storing the page cannot fail
    half-way and wedge the peer's sync."""
    if not isinstance(body, dict) or not isinstance(body.get("events"), list):
        raise BadPage("the answer has no list of events")
    rows = []
    for item in body["events"]:
        try:
            origin_seq = item.get("origin_seq")
            if isinstance(origin_seq, int) and not isinstance(origin_seq, bool):
                _seq(origin_seq)  # any other value is a bad signature, counted as such
            if not isinstance(item["data"], dict):
                raise TypeError("data is not an object")
            rows.append({
                "id": _text(item["id"], 36), "origin": _text(item["origin"], 64), "type": _text(item["type"], 64),
                "run_id": (_text(item["run_id"], 36) if item.get("run_id") else None),
                "created_at": _parse_time(item["created_at"]), "data": item["data"], "seq": _seq(item["seq"]),
                "origin_seq": origin_seq, "signature": item.get("signature"),
            })
        except (KeyError, TypeError, ValueError, OverflowError, AttributeError):
            raise BadPage("an event in the page is malformed") from None
    try:
        return rows, _seq(body["last_seq"]), bool(body["has_more"])
    except (KeyError, TypeError, ValueError):
        raise BadPage("the page has no last_seq / has_more (or a last_seq out of range)") from None


def _said(text: str | None, peer: Peer) -> str | None:
    """A peer's words as kept and shown (``last_error``, ``last_rejection``, a pass's result):
    without the token this node presents to it, nor any other token or key. ``GET
    /federation/nodes`` shows them to every peer: a peer echoing our token back in its error, or
    writing it into an event's type, must not hand it to the others (it is sealed at rest)."""
    return None if text is None else logs.redact_text(text, [peer.token])


def _stale_after(fed: dict[str, Any]) -> timedelta:
    """How far past the newest checkpoint of an origin what is heard of it may be (witness.py)."""
    return timedelta(seconds=witness.STALE_INTERVALS * float(fed["sync_interval"]))


class Syncer:
    def __init__(self, runtime: Any):
        self.runtime = runtime
        self.db = runtime.db
        self.node_name = runtime.settings.node_name
        self.owner = worker_identity()

    def run(self, only: str | None = None, progress: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
        fed = self.runtime.policies.current().federation
        if not fed["enabled"]:
            return [{"node": only or "*", "skipped": "federation_enabled is false in the policy"}]
        with self.db.read() as session:
            names = list(session.scalars(select(Node.name).where(Node.enabled.is_(True)).order_by(Node.name)))
        if only and only not in names:
            return [{"node": only, "skipped": "no such enabled node"}]
        results = []
        for name in [only] if only else names:
            if name not in fed["nodes"]:
                results.append({"node": name, "skipped": "not named in the policy's federation_nodes"})
                continue
            results.append(self.sync_peer(name, fed, force=bool(only), progress=progress))
        return results

    def _take(self, name: str, force: bool, lease: timedelta) -> bool:
        now = utcnow()
        condition = and_(Node.name == name, or_(Node.sync_lease_until.is_(None), Node.sync_lease_until < now))
        if not force:
            condition = and_(condition, or_(Node.next_attempt_at.is_(None), Node.next_attempt_at <= now))
        with self.db.write() as session:
            return bool(session.execute(update(Node).where(condition).values(
                sync_owner=self.owner, sync_lease_until=now + lease)).rowcount)

    def _release(self, name: str) -> None:
        with self.db.write() as session:
            session.execute(update(Node).where(Node.name == name, Node.sync_owner == self.owner).values(
                sync_owner=None, sync_lease_until=None))

    def _fail(self, name: str, reason: str, fed: dict[str, Any], contacted: bool) -> None:
        now = utcnow()
        with self.db.write() as session:
            node = session.get(Node, name)
            node.failures += 1
            node.last_error = reason[:255]
            delay = min(BACKOFF_BASE * 2 ** (node.failures - 1), float(fed["backoff_max_seconds"]))
            node.next_attempt_at = now + timedelta(seconds=delay * random.uniform(0.5, 1.0))  # noqa: S311
            if contacted:
                node.last_seen = now

    def _count_refused(self, name: str, reason: str, count: int = 1) -> None:
        """``aurora_federation_rejected_total{peer,reason}``: what ``name`` sent that was refused."""
        metrics.federation_rejected(name, reason, count)

    def _refused_events(self, name: str, refused: list[str]) -> str:
        """Oversize events were left out of a stored page: counted, and shown as the peer's last
        error (without a backoff: the page's other events were good, and the cursor moved on)."""
        self._count_refused(name, "event_too_large", len(refused))
        message = refused[-1] + (f" (and {len(refused) - 1} more)" if len(refused) > 1 else "")
        with self.db.write() as session:
            session.execute(update(Node).where(Node.name == name).values(last_error=message[:255]))
        return message

    def _store(self, name: str, old_cursor: int, screen: signing.Screen, page: signing.Screened,
               last_seq: int, lease: timedelta, stale_after: timedelta) -> int:
        """Insert the page's verified new events, count its refusals, keep the keys it introduced
        and the checkpoints it brought, and move the cursor, in one transaction; return how many
        events were new."""
        now = utcnow()
        with self.db.write() as session:
            moved = session.execute(update(Node).where(
                Node.name == name, Node.sync_owner == self.owner, Node.cursor == old_cursor).values(
                cursor=max(last_seq, old_cursor), remote_last_seq=last_seq, last_seen=now, last_success=now,
                failures=0, last_error=None, next_attempt_at=None, sync_lease_until=now + lease)).rowcount
            if not moved:
                raise BadPage("another sync moved this peer's cursor; stopping")
            # The keys were read when the pass began: one pinned since, or first introduced by
            # another peer's sync, is the one that counts, so check again where the events are stored.
            trust.learn(session, page.learned, by=name, dialect=self.db.dialect)
            screen.recheck(page, trust.current(session, page.verified_with))
            if page.rejected:  # kept with the peer for GET /federation/nodes
                node = session.get(Node, name)
                counts = dict(node.rejected or {})
                for reason, n in page.rejected.items():
                    counts[reason] = counts.get(reason, 0) + n
                node.rejected, node.last_rejection = counts, page.example
            fresh = [{k: v for k, v in row.items() if k != "seq"} for row in page.accepted]
            if not fresh:
                return 0
            self.db.lock(session, *OUTBOX_LOCKS)
            # RETURNING counts the rows inserted: psycopg's executemany reports no rowcount (-1),
            # which made every PostgreSQL sync say it pulled nothing
            # every foreign event has its origin's seq: it is in the partial unique index
            # (Event.UNIQUE_WHERE). No conflict target: SQLite infers a partial index only from a
            # WHERE it can match to the index's own, which differs per database (migration 0014).
            statement = insert_ignoring_conflicts(self.db.dialect, Event.__table__).returning(Event.__table__.c.seq)
            inserted = len(session.connection().execute(statement, fresh).all())
            witness.observe(self.db, session, self.node_name, page.accepted, stale_after)
            return inserted

    def sync_peer(self, name: str, fed: dict[str, Any], force: bool = False,
                  progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        lease = timedelta(seconds=float(fed["lease_seconds"]))
        if not self._take(name, force, lease):
            return {"node": name, "skipped": "another sync holds this peer, or it is backing off after failures"}
        tally = _Pass(name)
        keys = trust.known(self.db)
        try:
            with self.db.read() as session:
                node = session.get(Node, name)
                url, token, cursor = node.url, node.token, node.cursor
            if name not in keys:
                tally.error = f"no key pinned for {name}: register it again (aurora nodes register) to pin its key"
            else:
                try:
                    token = vault.open_token(self.runtime.settings.federation_secret_path, token)
                except vault.VaultError as exc:
                    tally.error = str(exc)
            if tally.error:
                self._fail(name, tally.error, fed, contacted=False)
            else:
                self._pull(Peer(name, url, token), cursor, fed, signing.Screen(self.node_name, name, keys), lease,
                           tally, progress)
                if tally.caught_up and tally.error is None:
                    # it answered, and all it had is here: its own checkpoints should be among it
                    witness.overdue_peer(self.db, self.node_name, name, _stale_after(fed))
        finally:
            self._release(name)
        return tally.result()

    def _pull(self, peer: Peer, cursor: int, fed: dict[str, Any], screen: signing.Screen, lease: timedelta,
              tally: _Pass, progress: Callable[[dict[str, Any]], None] | None) -> None:
        """Pages after ``cursor``, each verified and stored in order while the next one is
        fetched (``prefetch.py``), until the last, a failure, ``max_pages`` or the pass's deadline."""
        name = peer.name
        with ThreadPoolExecutor(signing.VERIFY_THREADS, thread_name_prefix="aurora-verify") as pool, Prefetcher(
                peer, cursor, int(fed["page_size"]), int(fed["max_pages"]), float(fed["timeout_seconds"]),
                time.monotonic() + float(fed["pass_timeout_seconds"]), _validate) as pages:
            for page in pages:
                if page.stopped:
                    tally.stopped = "the pass's deadline (pass_timeout_seconds): the next pass goes on from the cursor"
                    return
                if isinstance(page.error, FederationFetchError):
                    tally.error = _said(str(page.error), peer)
                    if page.error.refused:
                        self._count_refused(name, page.error.reason)
                    self._fail(name, tally.error, fed, contacted=page.error.contacted)
                    return
                try:
                    if page.error is not None:  # the page is malformed (BadPage), or worse
                        raise page.error
                    screened = screen.page(page.rows, page.body.get("keys"), pool)
                    screened.example = _said(screened.example, peer)
                    new = self._store(name, page.since, screen, screened, page.last_seq, lease,
                                      _stale_after(fed))
                except (BadPage, ValueError) as exc:
                    tally.error = _said(f"bad answer: {exc}", peer)
                    self._count_refused(name, "bad_page")
                    self._fail(name, tally.error, fed, contacted=True)
                    return
                for reason, count in screened.rejected.items():
                    self._count_refused(name, reason, count)
                tally.rejected += sum(screened.rejected.values())
                if page.refused:
                    tally.refused = self._refused_events(name, [_said(r, peer) for r in page.refused])
                tally.pulled += new
                tally.pages += 1
                tally.caught_up = not page.has_more
                if progress:
                    progress({"node": name, "page": tally.pages, "new": new, "cursor": page.last_seq})


@dataclass
class _Pass:
    """What one pass over a peer did, for its result."""

    node: str
    pulled: int = 0
    pages: int = 0
    rejected: int = 0
    error: str | None = None
    refused: str | None = None
    stopped: str | None = None
    #: the last page stored said it was the peer's last (has_more false)
    caught_up: bool = False

    def result(self) -> dict[str, Any]:
        result: dict[str, Any] = {"node": self.node, "pulled": self.pulled, "pages": self.pages}
        for key in ("error", "refused", "rejected", "stopped"):
            if getattr(self, key):
                result[key] = getattr(self, key)
        return result
