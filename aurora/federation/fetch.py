"""Fetch one page of a peer's events, bounded in every way a peer could abuse.

A peer is another organisation's server: slow, broken or hostile, it must never hold a worker or
fill memory. So a page is fetched with

- a **wall-clock deadline**, not a per-read timeout (a peer sending a byte a second never lets a
  per-read timeout fire): a watchdog shuts the socket down at the deadline, whatever phase the
  exchange is in (headers, TLS, body), and the clock is checked between chunks besides;
- a **byte cap** on the answer, read streaming: ``limit`` events of at most :data:`MAX_EVENT_BYTES`
  each, plus :data:`ENVELOPE_BYTES`; a larger answer is cut off where it passes the cap;
- **no redirects**: a 3xx is an error naming where it pointed (a peer could otherwise send our
  token-bearing request on to any URL, or to a service inside our network);
- **a count check**: a page with more events than asked for is refused whole;
- **an event cap**: an event whose signed form (``signing.canonical``) is over 64 KiB (the cap
  Matrix puts on its events) is refused; the rest of its page is kept, so one oversize event never wedges a peer.

Each peer's connection is made for one page and closed: the watchdog watches the sockets made
for its page, which a pool kept across pages would hide from it. The exchange is in
``aurora/federation/wire.py``, loaded with the first page fetched: every process that serves
imports this module (signing and the registry use its limits), few of them fetch (``requests``
with urllib3, charset_normalizer and idna is ~11 MB of resident memory).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import AuroraError

if TYPE_CHECKING:  # the exchange itself (requests, urllib3) loads with the first page fetched
    from .wire import Watchdog

#: the largest event accepted, measured on the bytes its origin signed (``event_bytes``): Matrix's
#: cap on a federated event
MAX_EVENT_BYTES = 65_536
#: room in a page's answer beside its events (node, last_seq, has_more, the list's commas)
ENVELOPE_BYTES = 65_536
#: how much of an error answer is read, for the message it may carry
ERROR_BODY_BYTES = 4096
#: bytes asked of the socket at a time
CHUNK_BYTES = 65_536

#: reasons that are refusals of what the peer sent (counted in aurora_federation_rejected_total),
#: as opposed to a peer that cannot be reached or answers with an error status
REFUSALS = frozenset({"too_many_events", "event_too_large", "body_too_large", "deadline", "redirect", "bad_page"})


class FederationFetchError(AuroraError):
    """Raised when a page of a peer's events cannot be fetched, or is refused; ``reason`` is one
    short word for metrics (see :data:`REFUSALS`), the message says what happened for people."""

    code = "federation_fetch_error"

    def __init__(self, reason: str, message: str, contacted: bool = True):
        super().__init__(message)
        self.reason = reason
        #: whether the peer answered at all (a heartbeat is recorded then)
        self.contacted = contacted

    @property
    def refused(self) -> bool:
        return self.reason in REFUSALS


@dataclass(frozen=True)
class Peer:
    name: str
    url: str
    token: str = field(repr=False)


@dataclass
class Page:
    #: the peer's answer, with every event in it within :data:`MAX_EVENT_BYTES`
    body: dict[str, Any]
    #: one sentence per event refused for its size (the page's other events are kept)
    refused: list[str] = field(default_factory=list)


def said(text: Any, limit: int) -> str:
    """A peer's words as this node repeats them (an error's message, a refused event's id, a
    witness's ``problem``): at most ``limit`` characters, control characters written out
    (``\\x1b``, ``\\r``, ``\\n``), so that printed on an operator's terminal they can neither
    move the cursor, rewrite lines above, nor start a line of their own."""
    text = str(text)[:limit]
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def page_cap(limit: int) -> int:
    """The most bytes an honest answer to a page of ``limit`` events can take."""
    return limit * MAX_EVENT_BYTES + ENVELOPE_BYTES


#: for what is not an event at all (refused whole later, as a malformed page): all of it, in ASCII
_whole_item = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode


def event_bytes(item: Any) -> int:
    """The size of an event as its origin signed it (``signing.canonical``, without its domain
    line): the same bytes at every hop, whoever serves it under whichever ``seq``, however the
    wire escaped it. The text is ASCII, each non-ASCII character written ``\\uXXXX`` as in the
    database's JSON, so what is stored of it is never larger than this, but for the space the
    database's JSON writes after each ``,`` and ``:`` (docs/federation.md)."""
    from . import signing  # signing imports this module

    try:
        seq = item["origin_seq"]
        if not isinstance(seq, int) or isinstance(seq, bool):
            raise TypeError("no origin seq")
        signed = signing.canonical(item["id"], item["origin"], seq, item["type"], item["run_id"],
                                   signing.parse_time(item["created_at"]), item["data"])
        return len(signed) - len(signing.EVENT_DOMAIN)
    except (KeyError, TypeError, ValueError, OverflowError, AttributeError, RecursionError):
        try:
            return len(_whole_item(item))
        except (TypeError, ValueError, RecursionError):
            return 0  # not JSON: the page is refused whole as malformed


# -- fetching ------------------------------------------------------------------------------------

class Abort:
    """Lets another thread cut short the page being fetched (its watchdog fires at once), and
    every later one: a sync that stops while the next page is on its way does not wait for it."""

    def __init__(self) -> None:
        self.fired = False
        self._lock = threading.Lock()
        self._watchdog: Watchdog | None = None

    def watch(self, watchdog: Watchdog) -> None:
        with self._lock:
            self._watchdog = watchdog
            fired = self.fired
        if fired:
            watchdog.fire()

    def fire(self) -> None:
        with self._lock:
            self.fired = True
            watchdog = self._watchdog
        if watchdog is not None:
            watchdog.fire()


def fetch_page(peer: Peer, since: int, limit: int, deadline: float, abort: Abort | None = None) -> Page:
    """The peer's events after ``since`` (at most ``limit``), fetched by ``deadline`` (a
    :func:`time.monotonic` time). Raises :class:`FederationFetchError` saying why not."""
    from .wire import bounded_get

    status, raw = bounded_get(f"{peer.url}/federation/events", {"since": since, "limit": limit},
                               {"Authorization": f"Bearer {peer.token}"}, page_cap(limit), deadline,
                               f"({limit} events of at most 64 KiB, and the envelope)", abort)
    if status != 200:
        detail = _detail(raw)
        raise FederationFetchError("http_status", f"HTTP {status}" + (f": {detail}" if detail else ""))
    return _parse(raw, limit)


def get_json(url: str, headers: dict[str, str], cap: int, deadline: float) -> tuple[int, Any]:
    """Another GET to a peer (its identity, the checkpoint it holds as a witness) with a page's
    limits: the deadline, ``cap`` bytes, no redirects, nothing compressed. The status and the
    answer's JSON (None when it is not JSON, or for an error status); FederationFetchError else."""
    from .wire import bounded_get

    status, raw = bounded_get(url, None, headers, cap, deadline, "")
    if status != 200:
        return status, None
    try:
        return status, json.loads(raw, parse_constant=_not_json)
    except (ValueError, RecursionError):
        return status, None


def _detail(raw: bytes) -> str:
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return ""
    return said(body.get("message", ""), 120) if isinstance(body, dict) else ""


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def _parse(raw: bytes, limit: int) -> Page:
    try:
        # NaN and Infinity are not JSON (RFC 8259), though Python reads and writes them: stored,
        # they would be served on to browsers and peers that cannot parse them (and PostgreSQL
        # refuses them)
        body = json.loads(raw, parse_constant=_not_json)
    except (ValueError, RecursionError):
        raise FederationFetchError("bad_page", "bad answer: not JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("events"), list):
        raise FederationFetchError("bad_page", "bad answer: the answer has no list of events")
    items = body["events"]
    if len(items) > limit:
        raise FederationFetchError("too_many_events", f"refused: the page has {len(items)} events, more than "
                                   f"the {limit} asked for (nothing of it was stored)")
    kept, refused = [], []
    for item in items:
        size = event_bytes(item)
        if size > MAX_EVENT_BYTES:
            name = said(item.get("id"), 40) if isinstance(item, dict) else "?"
            refused.append(f"refused: event {name} is {size} bytes, over the {MAX_EVENT_BYTES}-byte cap")
        else:
            kept.append(item)
    if refused:
        body = {**body, "events": kept}
    return Page(body=body, refused=refused)
