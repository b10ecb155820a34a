"""Bounded syncs: a hostile peer (a fake on loopback) cannot make this node store more than it
asked for, hold a worker past the deadline, fill its memory or send it elsewhere."""

from __future__ import annotations

import json
import socket
import threading
import time
import tracemalloc
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fakes import FakeServer, HostilePeer, Reply
from sqlalchemy import func, select

from aurora.federation import identity, registry, signing
from aurora.federation.fetch import MAX_EVENT_BYTES, FederationFetchError, Peer, event_bytes, fetch_page
from aurora.federation.models import Node
from aurora.federation.sync import Syncer
from aurora.models import Event

TOKEN = "aurfed_" + "t" * 40
#: the hostile peer signs its own events (signatures are docs/federation.md's; test_federation_trust tests them)
EVIL_KEY = Ed25519PrivateKey.generate()
EVIL_PUBLIC = identity.encode(EVIL_KEY.public_key())
PAGE = 7
DEADLINE = 2.0


@pytest.fixture
def env(env: dict[str, str]) -> dict[str, str]:
    """The in-process node, federating with the peer ``evil`` (pages of 7, 2 s a page)."""
    path = Path(env["AURORA_POLICY_FILE"])
    policy = json.loads(path.read_text())
    policy.update(federation_enabled=True, federation_nodes=["evil", "elsewhere"])
    policy["federation"].update(page_size=PAGE, timeout_seconds=DEADLINE, lease_seconds=30)
    path.write_text(json.dumps(policy))
    return env


def event(seq: int, **extra: Any) -> dict[str, Any]:
    # the signature's place is kept (86 characters) so that sizes measured before page() signs hold
    return {"id": str(uuid.uuid4()), "seq": seq, "origin": "evil", "type": "run.succeeded", "run_id": None,
            "created_at": datetime.now(UTC).isoformat(), "data": {"n": seq}, "origin_seq": seq,
            "signature": "A" * 86, **extra}


def page(items: list[dict[str, Any]], has_more: bool = False) -> dict[str, Any]:
    for item in items:
        item["signature"] = identity.encode_signature(EVIL_KEY.sign(signing.canonical(
            item["id"], item["origin"], item["origin_seq"], item["type"], item["run_id"],
            datetime.fromisoformat(item["created_at"]), item["data"])))
    return {"node": "evil", "events": items, "last_seq": items[-1]["seq"] if items else 0, "has_more": has_more}


def stored(runtime) -> int:
    with runtime.db.read() as session:
        return session.scalar(select(func.count()).select_from(Event).where(Event.origin == "evil"))


def sync(runtime, name: str = "evil") -> dict[str, Any]:
    [result] = Syncer(runtime).run(name)
    return result


def rejected(reason: str, peer: str = "evil") -> float:
    """The counter as this process holds it (see test_webhooks.rejected_count)."""
    from aurora import metrics

    return metrics._metrics()["federation_rejected"].labels(peer, reason)._value.get()  # noqa: SLF001


def listed(client, api_keys, name: str = "evil") -> dict[str, Any]:
    answer = client.get("/federation/nodes", headers=api_keys.header("admin"))
    assert answer.status_code == 200
    return next(n for n in answer.get_json()["nodes"] if n["name"] == name)


@pytest.fixture
def peer(runtime) -> HostilePeer:
    with HostilePeer() as fake:
        registry.register(runtime.db, fake.url, "evil", TOKEN, public_key=EVIL_PUBLIC,
                          secret_path=runtime.settings.federation_secret_path)
        yield fake


def test_an_honest_page_is_stored(runtime, peer) -> None:
    peer.body = page([event(1), event(2)])
    assert sync(runtime) == {"node": "evil", "pulled": 2, "pages": 1}
    assert peer.received[0].headers["authorization"] == f"Bearer {TOKEN}"
    assert peer.received[0].query["limit"] == [str(PAGE)]


def test_a_page_with_more_events_than_asked_is_refused_whole(runtime, peer, client, api_keys) -> None:
    before = rejected("too_many_events")
    peer.body = page([event(i) for i in range(1, PAGE + 2)])
    result = sync(runtime)
    assert result["pulled"] == 0 and "8 events, more than the 7 asked for" in result["error"]
    assert stored(runtime) == 0
    node = listed(client, api_keys)
    assert "more than the 7 asked for" in node["last_error"] and node["failures"] == 1 and node["next_attempt_at"]
    assert node["cursor"] == 0
    assert rejected("too_many_events") == before + 1


def test_an_event_over_64_kib_is_refused_and_the_rest_of_its_page_kept(runtime, peer, client, api_keys) -> None:
    before = rejected("event_too_large")
    fits, over = event(2, data={"pad": ""}), event(3, data={"pad": ""})
    # measured as signed: ASCII, "é" written \u00e9 (6 bytes), as the database's JSON writes it
    fits["data"]["pad"] = "é" * ((MAX_EVENT_BYTES - event_bytes(fits)) // 6)
    fits["data"]["pad"] += "x" * (MAX_EVENT_BYTES - event_bytes(fits))
    over["data"]["pad"] = "x" * (MAX_EVENT_BYTES - event_bytes(over) + 1)
    assert event_bytes(fits) == MAX_EVENT_BYTES and event_bytes(over) == MAX_EVENT_BYTES + 1
    peer.body = page([event(1), fits, over, event(4)])
    result = sync(runtime)
    assert result["pulled"] == 3 and f"event {over['id']} is {MAX_EVENT_BYTES + 1} bytes" in result["refused"]
    with runtime.db.read() as session:
        ids = set(session.scalars(select(Event.id).where(Event.origin == "evil")))
    assert over["id"] not in ids and fits["id"] in ids and len(ids) == 3
    node = listed(client, api_keys)
    assert over["id"] in node["last_error"] and node["failures"] == 0 and node["cursor"] == 4
    assert rejected("event_too_large") == before + 1


@pytest.mark.parametrize("kind", ["trickle_body", "trickle_headers"])
def test_a_peer_trickling_a_byte_a_second_is_cut_at_the_deadline(runtime, peer, client, api_keys, kind) -> None:
    before = rejected("deadline")
    peer.kind, peer.body = kind, page([event(1)])
    started = time.monotonic()
    result = sync(runtime)
    took = time.monotonic() - started
    assert DEADLINE - 0.2 < took < DEADLINE + 1.0, took  # a per-read timeout would wait for every byte
    assert result["error"].startswith("deadline") and stored(runtime) == 0
    assert "deadline" in listed(client, api_keys)["last_error"]
    assert rejected("deadline") == before + 1
    deadline = time.monotonic() + 5
    while not peer.hangups and time.monotonic() < deadline:
        time.sleep(0.1)
    assert peer.hangups and peer.hangups[0][0] - started < DEADLINE + 3  # the connection is gone too


def test_a_tls_handshake_trickled_a_byte_at_a_time_is_cut_at_the_deadline() -> None:
    """The watchdog watches the socket before TLS: a ServerHello sent a byte at a time ends too."""
    listener = socket.create_server(("127.0.0.1", 0))
    hung_up: list[float] = []

    def serve() -> None:
        conn, _ = listener.accept()
        conn.recv(4096)  # the ClientHello
        try:
            for byte in b"\x16\x03\x03\x40\x00" + b"\x02" * 1000:
                conn.send(bytes([byte]))
                time.sleep(0.5)
        except OSError:
            hung_up.append(time.monotonic())
        conn.close()

    threading.Thread(target=serve, daemon=True).start()
    started = time.monotonic()
    with pytest.raises(FederationFetchError) as refused:
        fetch_page(Peer("evil", f"https://127.0.0.1:{listener.getsockname()[1]}", TOKEN), 0, PAGE, started + DEADLINE)
    assert refused.value.reason == "deadline" and time.monotonic() - started < DEADLINE + 1.0
    deadline = time.monotonic() + 5
    while not hung_up and time.monotonic() < deadline:
        time.sleep(0.1)
    assert hung_up
    listener.close()


def test_a_redirect_is_not_followed(runtime, peer, client, api_keys) -> None:
    with FakeServer(default=lambda request: Reply(200, page([event(1)]))) as elsewhere:
        peer.kind, peer.location = "redirect", f"{elsewhere.url}/federation/events?token=secret#x"
        result = sync(runtime)
        assert not elsewhere.received  # our token never went there
    assert result["error"] == (f"refused: HTTP 302 redirect to {elsewhere.url}/federation/events "
                               "(redirects are not followed)")
    assert stored(runtime) == 0 and "secret" not in json.dumps(listed(client, api_keys))
    assert rejected("redirect") >= 1


def test_a_huge_body_is_cut_at_the_cap_while_streaming(runtime, peer) -> None:
    before = rejected("body_too_large")
    peer.kind = "huge"  # 50 MB, no Content-Length
    tracemalloc.start()
    try:
        result = sync(runtime)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result["error"].startswith("refused: the answer is larger than") and stored(runtime) == 0
    assert peak < 8 * 1024 * 1024, peak  # the cap for 7 events is 512 KiB: the 50 MB never sat in memory
    assert rejected("body_too_large") == before + 1
    deadline = time.monotonic() + 5
    while not peer.hangups and time.monotonic() < deadline:
        time.sleep(0.1)
    assert peer.hangups and peer.hangups[0][1] < 25 * 1024 * 1024  # cut off, not read to the end


def test_an_error_answer_is_read_only_for_its_message(runtime) -> None:
    """Before, a peer's error answer was parsed whole, however large."""
    body = json.dumps({"error": "busy", "message": "try later" + " " * 20_000_000}).encode()
    with FakeServer(default=lambda request: Reply(503, body)) as busy:
        registry.register(runtime.db, busy.url, "evil", TOKEN, public_key=EVIL_PUBLIC,
                          secret_path=runtime.settings.federation_secret_path)
        tracemalloc.start()
        try:
            result = sync(runtime)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert result["error"] == "HTTP 503" and peak < 4 * 1024 * 1024, peak


def test_a_declared_length_over_the_cap_is_refused(runtime, peer) -> None:
    peer.body = page([event(1, data={"pad": "x" * 600_000})])
    result = sync(runtime)
    assert result["error"].startswith("refused: the answer is larger than") and stored(runtime) == 0


def test_a_slow_peer_gets_at_most_the_pass_deadline(runtime, peer) -> None:
    """Each page in time, but pages without end: the pass stops at pass_timeout_seconds, keeps
    what it stored, and is not a failure."""
    path = runtime.settings.policy_file
    policy = json.loads(path.read_text())
    policy["federation"].update(pass_timeout_seconds=3, timeout_seconds=1, max_pages=12)
    path.write_text(json.dumps(policy))
    deadline = time.monotonic() + 5
    while runtime.policies.current().federation["pass_timeout_seconds"] != 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    peer.delay, peer.body = 0.5, page([event(1)], has_more=True)
    started = time.monotonic()
    result = sync(runtime)
    assert time.monotonic() - started < 3.5
    assert "error" not in result and result["stopped"].startswith("the pass's deadline") and result["pages"] >= 2
    with runtime.db.read() as session:
        assert session.get(Node, "evil").failures == 0


MAIL = {"name": "mail", "goal": "send_email", "payload": {"to": "a@example.com", "subject": "s", "text": "t"}}


def test_runs_finish_on_time_while_beat_syncs_trickling_peers(make_stack, rabbitmq_url, tmp_path) -> None:
    """The issue's stack: two beat-scheduled syncs of a trickling peer held both run worker
    processes for 170 s and a mail run waited 101 s. Syncs go through the system queue, hold at
    most two of its threads, and give up at the page's deadline."""
    hold = 12.0
    policy = json.loads((ROOT / "policy" / "batch8_policy.json").read_text())
    peers = [f"evil{i}" for i in range(4)]
    policy.update(federation_enabled=True, federation_nodes=peers)
    policy["federation"].update(sync_interval=1, page_size=PAGE, timeout_seconds=hold)
    policy_file = tmp_path / "policy-trickle.json"
    policy_file.write_text(json.dumps(policy))
    with HostilePeer() as fake:
        fake.kind, fake.body = "trickle_body", page([event(1)])
        stack = make_stack(broker_url=rabbitmq_url, AURORA_POLICY_FILE=str(policy_file))
        stack.aurora("db", "upgrade")
        for name in peers:  # more trickling peers than the system worker has threads
            stack.aurora("nodes", "register", fake.url, name, TOKEN, "--public-key", EVIL_PUBLIC)
        stack.boot()
        deadline = time.monotonic() + 30
        while not fake.received and time.monotonic() < deadline:
            time.sleep(0.1)
        assert fake.received, stack.log("system")
        first = time.monotonic()
        run_id = stack.http("POST", "/workflows", json=MAIL).json()["id"]
        stack.wait_status(run_id, {"succeeded"}, timeout=hold - 2)
        finished = time.monotonic()
        assert finished - first < hold - 1  # while the first page was still being trickled
        assert len(fake.hangups) == 0 or fake.hangups[0][0] > finished
        # and the syncs give up at the deadline: the peers show why, no thread is kept
        deadline = time.monotonic() + hold + 20
        errors: list[str] = []
        while time.monotonic() < deadline:
            errors = [n["last_error"] or "" for n in stack.http("GET", "/federation/nodes").json()["nodes"]]
            if sum(e.startswith("deadline") for e in errors) >= 2:
                break
            time.sleep(0.5)
        assert sum(e.startswith("deadline") for e in errors) >= 2, errors
        deadline = time.monotonic() + 5  # the fake finds the hang-up at its next byte
        while not fake.hangups and time.monotonic() < deadline:
            time.sleep(0.1)
        assert fake.hangups and fake.hangups[0][0] - first < hold + 5
        with_metric = stack.http("GET", "/metrics").text
        assert 'aurora_federation_rejected_total{peer="evil' in with_metric and 'reason="deadline"' in with_metric
