"""Events signed by their origin, and the screen every foreign event passes before it is stored.

**The signed bytes** of an event are ``aurora-event-v1\\n`` followed by the UTF-8 of the JSON
object ``{"created_at", "data", "id", "origin", "run_id", "seq", "type"}`` written with sorted
keys, no whitespace (``","`` and ``":"``), non-ASCII escaped as ``\\uXXXX`` (so the bytes are
ASCII and no Unicode normalisation can differ), and ``created_at`` as UTC
``YYYY-MM-DDTHH:MM:SS.ffffffZ``. ``seq`` is the origin's own sequence number, which stays with
the event when it is relayed (``origin_seq``); the serving node's ``seq`` is only its cursor.

An origin signs its own events when it serves them (the Ed25519 signature is deterministic, so
every pull sees the same one); a relay serves the signature it stored. A node stores a foreign
event only when the signature verifies under the origin's key: the key it pinned for that node
or, for an origin it only hears of through a relay, the key a pinned peer introduced (each
introduction signed by that peer), learned on first introduction; a key once known is never
replaced by an introduction.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii as _string
from typing import Any

from . import identity
from .fetch import said

EVENT_DOMAIN = b"aurora-event-v1\n"
INTRODUCTION_DOMAIN = b"aurora-introduction-v1\n"

#: why a foreign event was refused (the ``reason`` label of aurora_federation_rejected_total)
OWN_ORIGIN, UNKNOWN_ORIGIN, BAD_SIGNATURE = "own_origin", "unknown_origin", "bad_signature"
REASONS = (OWN_ORIGIN, UNKNOWN_ORIGIN, BAD_SIGNATURE)


def parse_time(value: str) -> datetime:
    when = datetime.fromisoformat(value)
    if when.tzinfo is None:
        raise ValueError("naive time")
    return when


def _time(value: datetime) -> str:
    # YYYY-MM-DDTHH:MM:SS.ffffffZ (isoformat is several times faster than strftime)
    text = value.isoformat(timespec="microseconds")
    if text.endswith("+00:00"):  # already UTC (every stored time): no conversion to make
        return text[:-6] + "Z"
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


#: the canonical JSON of a value, one encoder for every call (``json.dumps`` with options makes one
#: per call); safe across threads, as each ``encode`` keeps its state to itself
_encode = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode


def _json(body: Any) -> bytes:
    return _encode(body).encode("ascii")


def canonical(event_id: str, origin: str, seq: int, type_: str, run_id: str | None, created_at: datetime,
              data: Any) -> bytes:
    """The bytes an event's signature covers (see the module's docstring)."""
    if type(event_id) is str and type(origin) is str and type(type_) is str and type(seq) is int and (
            run_id is None or type(run_id) is str):
        # The same bytes as the general form below, written field by field in its (sorted) key
        # order: one event's fields are signed or verified per event replicated, and this is a
        # third of the general form's price (tests/test_federation_speed.py holds them equal).
        return EVENT_DOMAIN + (f'{{"created_at":"{_time(created_at)}","data":{_encode(data)},'
                f'"id":{_string(event_id)},"origin":{_string(origin)},'
                f'"run_id":{"null" if run_id is None else _string(run_id)},"seq":{seq},'
                f'"type":{_string(type_)}}}').encode("ascii")
    return EVENT_DOMAIN + _json({"created_at": _time(created_at), "data": data, "id": event_id,
                                 "origin": origin, "run_id": run_id, "seq": seq, "type": type_})


def introduction(origin: str, public_key: str, by: str) -> bytes:
    """What a relay signs to vouch for another origin's key."""
    return INTRODUCTION_DOMAIN + _json({"by": by, "origin": origin, "public_key": public_key})


#: the columns of ``events`` a page serves, in the order :func:`served` reads them
SERVED_COLUMNS = ("seq", "id", "origin", "type", "run_id", "created_at", "data", "origin_seq", "signature")
#: this node's events signed when they are made, never when served (``witness.publish``)
SIGNED_AT_SOURCE = frozenset({"audit.checkpoint"})


def served(me: identity.Identity, rows: Iterable[Sequence[Any]]) -> list[dict[str, Any]]:
    """Events (rows of :data:`SERVED_COLUMNS`) as a peer is sent them: ``events.as_dict`` with the
    origin's seq and signature. This node signs its own events here, except those signed when they
    were made (:data:`SIGNED_AT_SOURCE`: their own signature, or none for a row written into the
    database by anyone else); a relayed one keeps the signature it came with."""
    items = []
    for seq, event_id, origin, type_, run_id, created_at, data, origin_seq, signature in rows:
        if origin == me.name:
            origin_seq = seq
            if type_ not in SIGNED_AT_SOURCE:
                signature = me.sign(canonical(event_id, origin, seq, type_, run_id, created_at, data))
        items.append({"id": event_id, "seq": seq, "origin": origin, "type": type_, "run_id": run_id,
                      "created_at": created_at.isoformat(), "data": data, "origin_seq": origin_seq,
                      "signature": signature})
    return items


@dataclass
class Screened:
    """One page after the screen: the events to store, the refusals, the keys first learned."""

    accepted: list[dict[str, Any]] = field(default_factory=list)
    rejected: dict[str, int] = field(default_factory=dict)
    #: the first refusal, said in a sentence (kept as the peer's ``last_rejection``)
    example: str | None = None
    learned: dict[str, str] = field(default_factory=dict)
    #: origin -> the key its accepted events were verified under (checked again where they are
    #: stored: ``Screen.recheck``)
    verified_with: dict[str, str] = field(default_factory=dict)

    def refuse(self, reason: str, row: dict[str, Any], why: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        if self.example is None:  # a peer's words, written out (fetch.said)
            self.example = (f"{reason}: event {said(row['id'], 36)} ({said(row['type'], 64)}) claiming origin "
                            f"{row['origin']!r} {why}")[:255]


class Screen:
    """Verifies the events one peer sends, with the keys this node knows (``trust.known``)."""

    def __init__(self, me: str, peer: str, keys: dict[str, str]):
        self.me, self.peer = me, peer
        self.keys = dict(keys)  # origin -> public key text
        self._objects: dict[str, Any] = {}

    def _key(self, origin: str) -> Any:
        text = self.keys.get(origin)
        if text is None:
            return None
        if origin not in self._objects:
            self._objects[origin] = identity.raw(identity.decode(text))
        return self._objects[origin]

    def _learn(self, origin: str, introductions: Any, result: Screened) -> None:
        """Trust on first introduction: an unknown origin's key, vouched for by the pinned peer."""
        peer_key = self._key(self.peer)
        offer = introductions.get(origin) if isinstance(introductions, dict) else None
        if peer_key is None or not isinstance(offer, dict) or not identity.NAME.match(origin):
            return  # only a name a node can have: no spaces, look-alike letters or control characters
        public_key, signature = offer.get("public_key"), offer.get("signature")
        if not isinstance(public_key, str):  # (a list or an object is not even hashable: decode's cache)
            return
        try:
            identity.decode(public_key)
        except ValueError:
            return
        if identity.valid(peer_key, signature, introduction(origin, public_key, self.peer)):
            self.keys[origin] = result.learned[origin] = public_key

    def page(self, rows: list[dict[str, Any]], introductions: Any = None, pool: Executor | None = None) -> Screened:
        """Screen one page, in order. The signatures are checked each on its own, in ``pool``'s
        threads when there is one (libsodium runs without the GIL, so they share the cores)."""
        result = Screened()
        checks: list[tuple[bytes, Any, bytes]] = []  # key, signature, signed bytes
        verdicts: list[int | tuple[str, str]] = []  # per row: its place in checks, or why it is refused
        for row in rows:
            origin = row["origin"]
            if origin == self.me:
                verdicts.append((OWN_ORIGIN, "(this node's own name)"))
                continue
            if origin not in self.keys and origin != self.peer:
                if origin.casefold() == self.me.casefold():
                    verdicts.append((OWN_ORIGIN, "(this node's own name, in other letters)"))
                    continue
                self._learn(origin, introductions, result)
            key = self._key(origin)
            if key is None:
                verdicts.append((UNKNOWN_ORIGIN, "whose key this node has not pinned nor been introduced to"))
                continue
            seq = row.get("origin_seq")
            if not isinstance(seq, int) or isinstance(seq, bool):
                verdicts.append(_FORGED)
                continue
            verdicts.append(len(checks))
            checks.append((key, row.get("signature"), canonical(row["id"], origin, seq, row["type"], row["run_id"],
                                                                row["created_at"], row["data"])))
        valid = verify(checks, pool)
        for row, verdict in zip(rows, verdicts, strict=True):
            if isinstance(verdict, int):
                if valid[verdict]:
                    result.accepted.append(row)
                    result.verified_with[row["origin"]] = self.keys[row["origin"]]
                    continue
                verdict = _FORGED
            result.refuse(verdict[0], row, verdict[1])
        return result

    def recheck(self, result: Screened, current: dict[str, str]) -> None:
        """Refuse the accepted events of origins whose key this node holds now (``current``, read
        in the transaction storing them) is not the one they were verified under: a key pinned,
        or first introduced by another peer, while this pass ran wins over what the pass used."""
        stale = {origin for origin, key in result.verified_with.items() if current.get(origin) != key}
        if not stale:
            return
        kept = []
        for row in result.accepted:
            if row["origin"] in stale:
                result.refuse(BAD_SIGNATURE, row, "was verified under a key this node no longer holds for it")
            else:
                kept.append(row)
        result.accepted = kept
        for origin in stale:
            result.verified_with.pop(origin)
            result.learned.pop(origin, None)
            self._objects.pop(origin, None)
            if origin in current:
                self.keys[origin] = current[origin]
            else:
                self.keys.pop(origin, None)


_FORGED = (BAD_SIGNATURE, "does not carry that origin's valid signature")
#: threads a sync verifies a page's signatures in (``pool`` of :meth:`Screen.page`)
VERIFY_THREADS = 2
#: below this many signatures a page is checked in the calling thread (handing work to threads
#: costs more than it saves)
PARALLEL_FROM = 64


def _check(checks: list[tuple[bytes, Any, bytes]]) -> list[bool]:
    return [identity.valid(key, signature, message) for key, signature, message in checks]


def verify(checks: list[tuple[bytes, Any, bytes]], pool: Executor | None = None,
           workers: int = VERIFY_THREADS) -> list[bool]:
    """Each signature's own verdict, in order: ``(key, signature, signed bytes)`` for each."""
    if pool is None or len(checks) < PARALLEL_FROM:
        return _check(checks)
    size = -(-len(checks) // workers)
    return [ok for part in pool.map(_check, [checks[i:i + size] for i in range(0, len(checks), size)]) for ok in part]
