"""Fetch a peer's next page while this one is verified and stored.

A pull is a chain — the peer reads and signs a page, this node verifies and stores it, then asks
for the next — so, one page at a time, each side waits while the other works. A thread of its own
fetches page N + 1 (and parses it, and checks its shape) while the sync verifies and stores page
N, so the two nodes work at once. Every bound of ``fetch.py`` holds for each page as before (its
wall-clock deadline, its byte cap, its count check); besides:

- the thread is **at most one page ahead**: it asks for a page only once the sync has taken the
  one before, so at most two pages are held at a time (the one being stored, the next);
- it asks for the next page **after the cursor the page before moves to** (``max(last_seq,
  since)``, what storing it writes), so the pages are the ones a sync without it would ask for;
- it stops at the first page that fails, at the last page, at ``max_pages``, and before a page
  that could not arrive within the pass's deadline; the sync stores what came before, in order;
- :meth:`Prefetcher.close` cuts a fetch under way short at once (the page's watchdog fires), so a
  sync that stops early never waits for a page it will not store.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .fetch import Abort, Peer, fetch_page


@dataclass
class Fetched:
    """One page as it came, or why the pass ends here (``error`` or ``stopped``)."""

    since: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)
    last_seq: int = 0
    has_more: bool = False
    #: the page's body (its ``keys`` introduce origins) and the events refused for their size
    body: dict[str, Any] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)
    #: the fetch failed or was refused (FederationFetchError), the page is malformed (what
    #: ``check`` raised), or something unforeseen: the pass stops with it
    error: Exception | None = None
    #: the pass's deadline came before this page could have arrived in time
    stopped: bool = False


class Prefetcher:
    """Pages of ``peer`` after ``since``, fetched one ahead of the caller in a thread.

    ``check(body)`` turns a page's body into ``(rows, last_seq, has_more)``, raising on a malformed
    one; it runs in the thread too. Iterate, then :meth:`close` (a ``with`` block does both)."""

    def __init__(self, peer: Peer, since: int, limit: int, max_pages: int, page_seconds: float,
                 pass_deadline: float, check: Callable[[dict[str, Any]], tuple[list[dict[str, Any]], int, bool]]):
        self.peer, self.since, self.limit, self.max_pages = peer, since, limit, max_pages
        self.page_seconds, self.pass_deadline, self.check = page_seconds, pass_deadline, check
        self._pages: queue.SimpleQueue[Fetched | None] = queue.SimpleQueue()
        self._taken = threading.Semaphore(1)  # released each time the caller takes a page
        self._abort = Abort()
        self._thread = threading.Thread(target=self._run, name=f"aurora-fetch-{peer.name}", daemon=True)

    def __enter__(self) -> Prefetcher:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Fetched]:
        while True:
            item = self._pages.get()
            if item is None:
                return
            self._taken.release()
            yield item
            if item.error is not None or item.stopped:
                return

    def close(self) -> None:
        self._abort.fire()
        self._taken.release()  # a thread waiting to fetch sees the abort
        self._thread.join()

    def _run(self) -> None:
        try:
            self._fetch()
        except BaseException as exc:  # noqa: BLE001 - the caller raises it, in its own thread
            self._pages.put(Fetched(error=exc))
        finally:
            self._pages.put(None)

    def _fetch(self) -> None:
        since = self.since
        for pages in range(self.max_pages):
            self._taken.acquire()
            if self._abort.fired:
                return
            if pages and time.monotonic() + self.page_seconds > self.pass_deadline:
                self._pages.put(Fetched(since=since, stopped=True))
                return
            try:
                page = fetch_page(self.peer, since, self.limit,
                                  min(time.monotonic() + self.page_seconds, self.pass_deadline), self._abort)
                rows, last_seq, has_more = self.check(page.body)
            except Exception as exc:  # noqa: BLE001 - the caller tells them apart, in order
                if not self._abort.fired:
                    self._pages.put(Fetched(since=since, error=exc))
                return
            self._pages.put(Fetched(since=since, rows=rows, last_seq=last_seq, has_more=has_more,
                                    body=page.body, refused=page.refused))
            if not has_more:
                return
            since = max(last_seq, since)
