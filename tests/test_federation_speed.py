"""Replication at speed (issue 16's benchmark) without a weaker check: the shortcuts say exactly
what the general forms say, each signature checked in threads keeps its own verdict, and the page
fetched ahead is the one a sync would ask for, at most one ahead, and never waited for in vain."""

from __future__ import annotations

import json
import math
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fakes import HostilePeer
from sqlalchemy import select

from aurora.federation import identity, registry, signing
from aurora.federation.fetch import event_bytes
from aurora.federation.models import Node
from aurora.federation.sync import Syncer, _validate
from aurora.models import Event

TOKEN = "aurfed_" + "s" * 40
KEY = Ed25519PrivateKey.generate()
PUBLIC = identity.encode(KEY.public_key())
PAGE = 7


def general_canonical(event_id: Any, origin: Any, seq: Any, type_: Any, run_id: Any, created_at: datetime,
                      data: Any) -> bytes:
    """The signed bytes as first written (docs/federation.md): one json.dumps of the whole object."""
    when = created_at.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
    return signing.EVENT_DOMAIN + json.dumps(
        {"created_at": when, "data": data, "id": event_id, "origin": origin, "run_id": run_id, "seq": seq,
         "type": type_}, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


TIMES = [datetime(2026, 12, 1, 16, 39, 0, 123456, tzinfo=UTC), datetime(2026, 12, 1, 16, 39, tzinfo=UTC),
         datetime(2026, 12, 1, 17, 39, 0, 5, tzinfo=timezone(timedelta(hours=1))),
         datetime(2026, 6, 1, 12, 0, 0, 999999, tzinfo=ZoneInfo("Europe/Berlin")),
         datetime(2026, 12, 1, 0, 0, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
         datetime(1999, 12, 31, 23, 59, 59, tzinfo=ZoneInfo("UTC"))]
DATA = [{}, {"mode": "simulated", "n": 1}, {"z": 1, "a": [1, 2.5, None, True, False]},
        {"text": "Grüße, 東京 \U0001f600 \"quoted\" back\\slash \n\t\u2028 \x00"}, {"\u00e9": {"nested": {"deep": [{}]}}},
        {"big": 2**70, "neg": -0.0, "exp": 1e-7, "huge": 1e300, "nan": math.nan, "inf": -math.inf},
        {"lone": "\ud800"}, {"b": 1, "B": 2, "_": 3, "10": 4, "9": 5}]
STRINGS = ["run.succeeded", "evil", "", "ünïcode", 'q"uote', "back\\slash", "\x7f\x01", "\U0001f600"]


@pytest.mark.parametrize("when", TIMES)
def test_the_fast_canonical_form_is_byte_for_byte_the_general_one(when: datetime) -> None:
    for data in DATA:
        for text in STRINGS:
            for run_id in (None, str(uuid.uuid4()), text):
                for seq in (0, 1, 2**62):
                    args = (str(uuid.uuid4()) + text, text or "o", seq, text, run_id, when, data)
                    assert signing.canonical(*args) == general_canonical(*args), args
    # what is not of the plain types still takes the general form (a peer's JSON can carry anything)
    for odd in [(1, "o", 1, "t", None, when, {}), ("i", "o", True, "t", None, when, {}),
                ("i", "o", 1.0, "t", None, when, {}), ("i", "o", 1, "t", 5, when, {}), ("i", None, 1, "t", None, when, [])]:
        assert signing.canonical(*odd) == general_canonical(*odd), odd


def test_event_sizes_are_measured_on_the_signed_form() -> None:
    for data in DATA:
        for seq in (1, 2**62):
            item = {"id": "x", "origin": "ö", "type": "t", "run_id": None, "created_at": "2026-12-01T10:00:00+01:00",
                    "data": data, "seq": 7, "origin_seq": seq, "signature": "A" * 86}
            signed = {"created_at": "2026-12-01T09:00:00.000000Z", "data": data, "id": "x", "origin": "ö",
                      "run_id": None, "seq": seq, "type": "t"}
            text = json.dumps(signed, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
            assert event_bytes(item) == len(text), data
    # what is not an event at all is measured whole (its page is refused as malformed anyway)
    assert event_bytes("a string") == len('"a string"') and event_bytes(["é"]) == len('["\\u00e9"]')


def signed(seq: int, origin: str = "evil", key: Ed25519PrivateKey = KEY) -> dict[str, Any]:
    item = {"id": str(uuid.uuid4()), "seq": seq, "origin": origin, "type": "run.succeeded", "run_id": None,
            "created_at": datetime.now(UTC).isoformat(), "data": {"n": seq}, "origin_seq": seq}
    item["signature"] = identity.encode_signature(key.sign(signing.canonical(
        item["id"], origin, seq, item["type"], None, datetime.fromisoformat(item["created_at"]), item["data"])))
    return item


def test_each_signature_of_a_page_verified_in_threads_has_its_own_verdict() -> None:
    items = [signed(seq) for seq in range(1, 301)]
    items[3]["data"] = {"n": "changed after signing"}
    items[77]["signature"] = items[78]["signature"]  # another event's (valid) signature
    items[150]["signature"] = "A" * 86
    items[199]["origin_seq"] = True  # a bool is no seq
    items[200]["signature"] = None
    items[10] = signed(11, origin="me")  # this node's own origin
    items[20] = signed(21, origin="stranger", key=Ed25519PrivateKey.generate())  # a key nobody introduced
    items[250] = {**items[250], "origin_seq": items[250]["origin_seq"] + 1}
    rows, _, _ = _validate({"events": items, "last_seq": 300, "has_more": False})
    assert len(rows) > signing.PARALLEL_FROM  # the page is checked in the pool's threads
    bad = {3, 77, 150, 199, 200, 250}
    expected = [items[i]["id"] for i in range(300) if i not in bad | {10, 20}]
    with ThreadPoolExecutor(signing.VERIFY_THREADS) as pool:
        threaded = signing.Screen("me", "evil", {"evil": PUBLIC}).page(rows, None, pool)
    alone = signing.Screen("me", "evil", {"evil": PUBLIC}).page(rows)
    for result in (threaded, alone):
        assert [row["id"] for row in result.accepted] == expected
        assert result.rejected == {"bad_signature": 6, "own_origin": 1, "unknown_origin": 1}
        assert result.example.startswith(f"bad_signature: event {items[3]['id']} ")  # the first, in page order


# -- the page fetched ahead ----------------------------------------------------------------------

@pytest.fixture
def env(env: dict[str, str]) -> dict[str, str]:
    path = Path(env["AURORA_POLICY_FILE"])
    policy = json.loads(path.read_text())
    policy.update(federation_enabled=True, federation_nodes=["evil"])
    policy["federation"].update(page_size=PAGE, timeout_seconds=5, lease_seconds=30)
    path.write_text(json.dumps(policy))
    return env


@pytest.fixture
def peer(runtime) -> HostilePeer:
    with HostilePeer() as fake:
        registry.register(runtime.db, fake.url, "evil", TOKEN, public_key=PUBLIC,
                          secret_path=runtime.settings.federation_secret_path)
        yield fake


def pages_of(total: int, slow_after: int | None = None, broken_at: int | None = None) -> Any:
    """A peer's log of ``total`` signed events, served a page after ``since`` at a time; the page
    after ``slow_after`` takes 4 s, the one after ``broken_at`` is not a page."""
    log = [signed(seq) for seq in range(1, total + 1)]

    def body(query: dict[str, list[str]]) -> Any:
        since, limit = int(query["since"][0]), int(query["limit"][0])
        if since == slow_after:
            time.sleep(4)
        if since == broken_at:
            return {"events": "not a list"}
        chunk = log[since:since + limit]
        return {"node": "evil", "events": chunk, "last_seq": chunk[-1]["seq"] if chunk else since,
                "has_more": since + len(chunk) < total}
    return body


def sinces(peer: HostilePeer) -> list[int]:
    return [int(r.query["since"][0]) for r in peer.received]


def test_pages_are_fetched_one_ahead_and_stored_in_order(runtime, peer) -> None:
    peer.body = pages_of(5 * PAGE)
    asked: list[tuple[int, int]] = []

    def slow_store(progress: dict[str, Any]) -> None:
        time.sleep(0.3)  # room for the next page to come, and for more, were it let to run ahead
        asked.append((progress["page"], len(peer.received)))

    [result] = Syncer(runtime).run("evil", progress=slow_store)
    assert result == {"node": "evil", "pulled": 5 * PAGE, "pages": 5}
    assert sinces(peer) == [0, 7, 14, 21, 28]  # each after the cursor the page before moved to
    assert all(n <= page + 1 for page, n in asked), asked  # never more than one page ahead
    assert any(n == page + 1 for page, n in asked), asked  # and ahead it was
    with runtime.db.read() as session:
        assert list(session.scalars(select(Event.origin_seq).where(Event.origin == "evil").order_by(Event.seq))) == \
            list(range(1, 5 * PAGE + 1))
        assert session.get(Node, "evil").cursor == 5 * PAGE


def test_a_page_that_fails_ends_the_pass_after_the_pages_before_it(runtime, peer) -> None:
    peer.body = pages_of(5 * PAGE, broken_at=2 * PAGE)
    [result] = Syncer(runtime).run("evil")
    assert result["pulled"] == 2 * PAGE and result["pages"] == 2 and "no list of events" in result["error"]
    assert sinces(peer) == [0, 7, 14]  # nothing asked after the failure
    with runtime.db.read() as session:
        node = session.get(Node, "evil")
        assert node.cursor == 2 * PAGE and node.failures == 1 and node.sync_owner is None


def test_a_pass_that_stops_does_not_wait_for_the_page_on_its_way(runtime, peer) -> None:
    peer.body = pages_of(3 * PAGE, slow_after=PAGE)

    def fail(progress: dict[str, Any]) -> None:
        time.sleep(0.2)  # the next page is asked for meanwhile (it takes 4 s)
        raise RuntimeError("stop here")

    started = time.monotonic()
    with pytest.raises(RuntimeError, match="stop here"):
        Syncer(runtime).run("evil", progress=fail)
    assert time.monotonic() - started < 2.5  # not the 4 s the page on its way takes
    assert sinces(peer) == [0, 7]
    with runtime.db.read() as session:
        node = session.get(Node, "evil")
        assert node.cursor == PAGE and node.sync_owner is None  # the first page kept, the lease given back
