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
from dataclasses import dataclass, field
from datetime import UTC, datetime
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
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _json(body: Any) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def canonical(event_id: str, origin: str, seq: int, type_: str, run_id: str | None, created_at: datetime,
              data: Any) -> bytes:
    """The bytes an event's signature covers (see the module's docstring)."""
    return EVENT_DOMAIN + _json({"created_at": _time(created_at), "data": data, "id": event_id,
                                 "origin": origin, "run_id": run_id, "seq": seq, "type": type_})


def introduction(origin: str, public_key: str, by: str) -> bytes:
    """What a relay signs to vouch for another origin's key."""
    return INTRODUCTION_DOMAIN + _json({"by": by, "origin": origin, "public_key": public_key})


#: this node's events signed when they are made, never when served (``witness.publish``)
SIGNED_AT_SOURCE = frozenset({"audit.checkpoint"})


def served(me: identity.Identity, event: Any, item: dict[str, Any]) -> dict[str, Any]:
    """``item`` (``events.as_dict(event)``) with the origin's seq and signature, for a peer."""
    if event.origin == me.name and event.type in SIGNED_AT_SOURCE:
        # its own signature, or none (a row written into the database by anyone else)
        item["origin_seq"], item["signature"] = event.seq, event.signature
    elif event.origin == me.name:
        item["origin_seq"] = event.seq
        item["signature"] = me.sign(canonical(event.id, event.origin, event.seq, event.type, event.run_id,
                                              event.created_at, event.data))
    else:
        item["origin_seq"], item["signature"] = event.origin_seq, event.signature
    return item


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

    def page(self, rows: list[dict[str, Any]], introductions: Any = None) -> Screened:
        result = Screened()
        for row in rows:
            origin = row["origin"]
            if origin == self.me:
                result.refuse(OWN_ORIGIN, row, "(this node's own name)")
                continue
            if origin not in self.keys and origin != self.peer:
                if origin.casefold() == self.me.casefold():
                    result.refuse(OWN_ORIGIN, row, "(this node's own name, in other letters)")
                    continue
                self._learn(origin, introductions, result)
            key = self._key(origin)
            if key is None:
                result.refuse(UNKNOWN_ORIGIN, row, "whose key this node has not pinned nor been introduced to")
                continue
            seq = row.get("origin_seq")
            if not isinstance(seq, int) or isinstance(seq, bool) or not identity.valid(
                    key, row.get("signature"), canonical(row["id"], origin, seq, row["type"], row["run_id"],
                                                         row["created_at"], row["data"])):
                result.refuse(BAD_SIGNATURE, row, "does not carry that origin's valid signature")
                continue
            result.accepted.append(row)
            result.verified_with[origin] = self.keys[origin]
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
