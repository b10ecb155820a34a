"""The red team of issue 16 (federation you can trust): each test is a break found by a hostile
peer, a hostile relay or a fault, that failed before its fix. The hostile peers are fakes on
loopback speaking the documented wire format and signing with their own keys
(test_federation_bounds' ``evil``); the node is Aurora's real runtime and web app."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from fakes import HostilePeer
from test_federation_bounds import DEADLINE, EVIL_PUBLIC, PAGE, TOKEN, event, page, sync

from aurora.federation import registry, signing


@pytest.fixture
def env(env: dict[str, str]) -> dict[str, str]:
    """The in-process node ``test-node``, federating with ``evil`` and ``elsewhere``."""
    path = Path(env["AURORA_POLICY_FILE"])
    policy = json.loads(path.read_text())
    policy.update(federation_enabled=True, federation_nodes=["evil", "elsewhere"])
    policy["federation"].update(page_size=PAGE, timeout_seconds=DEADLINE, lease_seconds=30)
    path.write_text(json.dumps(policy))
    return env


@pytest.fixture
def peer(runtime) -> HostilePeer:
    """``evil``, registered with its key pinned (test_federation_bounds' hostile peer)."""
    with HostilePeer() as fake:
        registry.register(runtime.db, fake.url, "evil", TOKEN, public_key=EVIL_PUBLIC,
                          secret_path=runtime.settings.federation_secret_path)
        yield fake


MAIL = {"name": "mail", "goal": "send_email", "payload": {"to": "a@example.com", "subject": "s", "text": "t"}}


def _sign_in(client, key: str) -> None:
    token = client.get("/ui/login").get_data(as_text=True).split('name="csrf_token" value="')[1].split('"')[0]
    assert client.post("/ui/login", data={"key": key, "csrf_token": token}).status_code in (302, 303)


def _frames(body: str) -> list[dict[str, Any]]:
    return [json.loads(line[len("data: "):]) for line in body.splitlines()
            if line.startswith("data: ") and '"seq"' in line]


def test_a_peers_events_about_a_local_run_never_reach_its_live_timeline(runtime, peer, client, api_keys) -> None:
    """Before: ``GET /workflows/<id>/stream`` and the run page's live timeline (``/ui/runs/<id>/stream``)
    sent every event with the run's id, whatever its origin: a peer's validly signed
    "approval.approved — ceo" appeared on the local run's page as it happened."""
    run_id = client.post("/workflows", json=MAIL, headers=api_keys.header("submitter")).get_json()["id"]
    forged = [event(1, type="approval.approved", run_id=run_id, data={"voter": "ceo", "comment": "by phone"}),
              event(2, type="run.succeeded", run_id=run_id, data={"mode": "live"})]
    peer.body = page(forged)
    assert sync(runtime)["pulled"] == 2  # evil's own events, validly signed: stored as evil's

    api = client.get(f"/workflows/{run_id}/stream", headers=api_keys.header("admin"))
    assert api.status_code == 200
    frames = _frames(api.get_data(as_text=True))
    assert [f["type"] for f in frames] == ["run.queued"] and {f["origin"] for f in frames} == {"test-node"}
    assert "event: run.succeeded" not in api.get_data(as_text=True)
    # resuming after the last local event does not bring them either
    resumed = client.get(f"/workflows/{run_id}/stream", headers={**api_keys.header("admin"),
                                                                 "Last-Event-ID": str(frames[-1]["seq"])})
    assert _frames(resumed.get_data(as_text=True)) == []

    _sign_in(client, api_keys.admin)
    page_stream = client.get(f"/ui/runs/{run_id}/stream")
    assert page_stream.status_code == 200
    assert [f["origin"] for f in _frames(page_stream.get_data(as_text=True))] == ["test-node"]
    # the peer's events are still there, under the peer's name
    held = client.get("/events?origin=evil", headers=api_keys.header("admin")).get_json()["events"]
    assert [e["type"] for e in held] == ["approval.approved", "run.succeeded"]


def _node(runtime, name: str = "evil"):
    from aurora.federation.models import Node

    with runtime.db.read() as session:
        node = session.get(Node, name)
        return {"failures": node.failures, "cursor": node.cursor, "last_error": node.last_error}


def _stored(runtime, origin: str = "evil") -> int:
    from sqlalchemy import func, select

    from aurora.models import Event

    with runtime.db.read() as session:
        return session.scalar(select(func.count()).select_from(Event).where(Event.origin == origin))


@pytest.mark.parametrize("hostile", [
    "created_at_out_of_range",  # 0001-01-01 at +01:00 is before year 1 in UTC: OverflowError
    "origin_seq_too_big",  # signed, but no 64-bit column holds it: OverflowError from the database
    "last_seq_too_big",
    "nan_in_data",  # not JSON (Python's json reads it); PostgreSQL refuses it, browsers cannot parse it
    "nul_in_type",  # PostgreSQL's text cannot hold NUL
])
def test_a_signed_event_the_database_cannot_hold_is_a_refused_page_not_a_crash(runtime, peer, hostile) -> None:
    """Before: these pages passed the checks, then raised out of the sync (OverflowError, a
    traceback in ``aurora federation sync`` and the system worker), recording no failure and no
    backoff: the peer's sync stayed wedged on that page, crashing at every pass."""
    from test_federation_bounds import rejected

    before = rejected("bad_page")
    items = [event(1), event(2)]
    if hostile == "created_at_out_of_range":
        items[1]["created_at"] = "0001-01-01T00:00:00+01:00"
    elif hostile == "origin_seq_too_big":
        items[1]["origin_seq"] = 2**63
    elif hostile == "nan_in_data":
        items[1]["data"] = {"amount": float("nan")}
    elif hostile == "nul_in_type":
        items[1]["type"] = "run.succeeded\x00"
    body = page(items) if hostile != "created_at_out_of_range" else page(items[:1]) | {"events": items}
    if hostile == "last_seq_too_big":
        body["last_seq"] = 2**64
    peer.body = body
    result = sync(runtime)
    assert result["pulled"] == 0 and result["error"].startswith("bad answer"), result
    assert _stored(runtime) == 0
    node = _node(runtime)
    assert node["failures"] == 1 and node["cursor"] == 0 and node["last_error"].startswith("bad answer")
    assert rejected("bad_page") == before + 1


def test_a_checkpoint_with_counts_no_column_holds_is_not_witnessed_and_does_not_wedge(runtime, peer) -> None:
    items = [event(1, type="audit.checkpoint", data={"count": 2**63, "head_pk": 2**63, "head_hash": "0" * 64,
                                                     "created_at": "2026-01-01T00:00:00+00:00", "anchor": None})]
    peer.body = page(items)
    result = sync(runtime)
    assert result == {"node": "evil", "pulled": 1, "pages": 1}, result
    from aurora.federation import witness

    assert witness.held(runtime.db, "evil")["checkpoint"] is None


@pytest.mark.parametrize("meanwhile", ["pinned_directly", "introduced_by_another_peer"])
def test_a_key_this_node_took_for_an_origin_during_a_pass_wins_over_the_passs_own_introduction(
        runtime, meanwhile) -> None:
    """Before: a pass read the keys once, at its start. If meanwhile origin-x's key was pinned
    (``aurora nodes register origin-x --public-key``) or first introduced by another peer, the
    pass's later page could still introduce a key of its own for origin-x and have events
    forged with it stored (the introduction itself was not kept: a key was already held)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from fakes import FakeServer, Reply
    from test_federation_bounds import EVIL_KEY
    from test_federation_trust import introduce, make_event, public_text

    from aurora.federation import trust
    from aurora.federation.sync import Syncer

    real_x, fake_x = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    genuine = make_event(real_x, "origin-x", 1, "run.succeeded", {"by": "origin-x"})
    forged = make_event(fake_x, "origin-x", 2, "run.succeeded", {"by": "evil, as origin-x"})
    forged["seq"] = 2
    honest_page = {"node": "elsewhere", "events": [genuine],
                   "keys": {"origin-x": introduce(EVIL_KEY, "elsewhere", "origin-x", public_text(real_x))},
                   "last_seq": 1, "has_more": False}

    def elsewhere_answer(request) -> Reply:
        return Reply(200, honest_page)

    def evil_answer(request) -> Reply:
        if request.query["since"] == ["0"]:
            return Reply(200, page([event(1)], has_more=True))
        # between evil's pages, this node learns origin-x's real key
        if meanwhile == "pinned_directly":
            registry.register(runtime.db, "http://127.0.0.1:9", "origin-x", TOKEN, public_key=public_text(real_x),
                              secret_path=runtime.settings.federation_secret_path)
        else:
            assert Syncer(runtime).run("elsewhere")[0]["pulled"] == 1
        return Reply(200, {"node": "evil", "events": [forged], "last_seq": 2, "has_more": False,
                           "keys": {"origin-x": introduce(EVIL_KEY, "evil", "origin-x", public_text(fake_x))}})

    with FakeServer(default=evil_answer) as evil, FakeServer(default=elsewhere_answer) as elsewhere:
        registry.register(runtime.db, evil.url, "evil", TOKEN, public_key=EVIL_PUBLIC,
                          secret_path=runtime.settings.federation_secret_path)
        # elsewhere signs its introductions with the same test key as evil: it is pinned with it
        registry.register(runtime.db, elsewhere.url, "elsewhere", TOKEN, public_key=EVIL_PUBLIC,
                          secret_path=runtime.settings.federation_secret_path)
        result = sync(runtime)
    assert result["pages"] == 2 and result["pulled"] == 1 and result["rejected"] == 1, result
    held = {k["origin"]: k for k in trust.listing(runtime.db)}
    assert held["origin-x"]["public_key"] == public_text(real_x)
    from sqlalchemy import select

    from aurora.models import Event

    with runtime.db.read() as session:
        from_x = list(session.scalars(select(Event.id).where(Event.origin == "origin-x")))
    assert forged["id"] not in from_x
    assert from_x == ([genuine["id"]] if meanwhile == "introduced_by_another_peer" else [])
    assert _node(runtime)["failures"] == 0
    from aurora.federation.models import Node

    with runtime.db.read() as session:
        assert session.get(Node, "evil").rejected == {"bad_signature": 1}


def test_removing_a_peer_does_not_let_a_relay_introduce_another_key_for_it_later(runtime, peer) -> None:
    """Before: ``aurora nodes remove X`` deleted X's pinned key with the peer, so the next relay to
    mention X introduced a key of its own for it, and events forged in X's name were stored as
    X's: a way to swap an origin's key after the fact."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from test_federation_bounds import EVIL_KEY
    from test_federation_trust import introduce, make_event, public_text

    from aurora.federation import trust

    real = Ed25519PrivateKey.generate()
    registry.register(runtime.db, "http://127.0.0.1:9", "elsewhere", TOKEN, public_key=public_text(real),
                      secret_path=runtime.settings.federation_secret_path)
    registry.remove(runtime.db, "elsewhere")  # pulled through evil from now on, say
    swapped = Ed25519PrivateKey.generate()
    forged = make_event(swapped, "elsewhere", 1, "run.succeeded", {"mode": "live"})
    genuine = make_event(real, "elsewhere", 2, "run.succeeded", {"mode": "simulated"})
    forged["seq"], genuine["seq"] = 1, 2
    peer.body = {"node": "evil", "events": [forged, genuine], "last_seq": 2, "has_more": False,
                 "keys": {"elsewhere": introduce(EVIL_KEY, "evil", "elsewhere", public_text(swapped))}}
    result = sync(runtime)
    assert result["pulled"] == 1 and result["rejected"] == 1, result
    from sqlalchemy import select

    from aurora.models import Event

    with runtime.db.read() as session:
        assert list(session.scalars(select(Event.id).where(Event.origin == "elsewhere"))) == [genuine["id"]]
    [kept] = [k for k in trust.listing(runtime.db) if k["origin"] == "elsewhere"]
    assert kept["public_key"] == public_text(real) and kept["source"] == "pinned"
    # registering it again with another key still needs saying so (--public-key), as for any pin
    from aurora.federation.registry import KeyChanged

    with pytest.raises(KeyChanged):
        registry.register(runtime.db, "http://127.0.0.1:9", "elsewhere", TOKEN, public_key=public_text(swapped),
                          secret_path=runtime.settings.federation_secret_path)
    registry.register(runtime.db, "http://127.0.0.1:9", "elsewhere", TOKEN, public_key=public_text(swapped),
                      secret_path=runtime.settings.federation_secret_path, repin=True)


def test_a_signature_written_another_way_is_refused(runtime, peer) -> None:
    """Before: a signature was read with Python's lenient base64, so a relay could rewrite an
    origin's signature (the last character's unused bits, ``+`` for ``-``, ``/`` for ``_``) and
    have it stored and relayed as another string that still verified: a malleated signature."""
    from test_federation_bounds import rejected

    before = rejected("bad_signature")
    items = page([event(n) for n in range(1, 5)])["events"]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

    def last_bits(sig: str) -> str:  # the same 64 bytes: only the 4 unused bits of the last character differ
        return sig[:-1] + alphabet[alphabet.index(sig[-1]) ^ 1]

    def standard(sig: str) -> str:  # the same bytes in the standard alphabet
        return sig.replace("-", "+").replace("_", "/")

    items[1]["signature"] = last_bits(items[1]["signature"])
    while "-" not in items[2]["signature"] and "_" not in items[2]["signature"]:
        items[2] = page([event(3)])["events"][0]  # a signature with a character to rewrite
    items[2]["signature"] = standard(items[2]["signature"])
    peer.body = {"node": "evil", "events": items, "last_seq": 4, "has_more": False}
    result = sync(runtime)
    assert result["pulled"] == 2 and result["rejected"] == 2, result
    assert rejected("bad_signature") == before + 2


def test_a_peers_run_events_about_a_local_run_do_not_count_in_its_metrics(runtime, peer, client, api_keys) -> None:
    """Before: ``aurora_runs{goal,status}`` counted every ``run.<final status>`` event whose run id
    is a local run's, whatever its origin: a peer's validly signed ``run.succeeded`` (or
    ``run.failed``) about a local run still queued counted it as settled."""
    from aurora import tallies

    run_id = client.post("/workflows", json=MAIL, headers=api_keys.header("submitter")).get_json()["id"]
    peer.body = page([event(1, type="run.succeeded", run_id=run_id, data={"mode": "live"}),
                      event(2, type="run.failed", run_id=run_id, data={})])
    assert sync(runtime)["pulled"] == 2
    metrics = client.get("/metrics", headers=api_keys.header("admin")).get_data(as_text=True)
    runs = [line for line in metrics.splitlines() if line.startswith("aurora_runs{")]
    assert runs == ['aurora_runs{goal="send_email",status="queued"} 1.0'], runs
    assert sorted(tallies.read(runtime.db, runtime.settings.node_name)[0]) == [("send_email", "queued", 1)]


def test_pruning_a_local_run_archives_its_own_events_and_leaves_a_peers_in_place(runtime, peer) -> None:
    """Before: ``aurora prune`` archived every event with the run's id as the run's events (a
    peer's "approval.approved — ceo" became part of the local run's archived timeline) and
    deleted them, so this node stopped relaying the peer's events."""
    import gzip
    import time

    from aurora import documents
    from aurora.models import utcnow
    from aurora.prune import prune

    engine = runtime.engine
    run_id = engine.submit(documents.load(json.dumps(MAIL)), "sam").id
    assert engine.execute(run_id).status == "succeeded"
    peer.body = page([event(1, type="approval.approved", run_id=run_id, data={"voter": "ceo"})])
    assert sync(runtime)["pulled"] == 1
    time.sleep(0.05)
    done = prune(runtime.db, runtime.settings.home, utcnow(), runtime.settings.node_name)
    assert done["runs"] == 1
    with gzip.open(done["archive"], "rt") as lines:
        [archived] = [json.loads(line) for line in lines]
    assert archived["events"] and {e["origin"] for e in archived["events"]} == {"test-node"}
    assert _stored(runtime, "evil") == 1  # still the peer's, still relayed


def test_a_peers_event_with_a_form_responses_id_does_not_stop_this_node_recording_the_response(runtime, peer) -> None:
    """Before: a Typeform response was recorded (``typeform.response``) only if no event at all had
    its id (a UUID made from the form and the response token), whatever the origin: a peer's
    event with that id (a peer ingesting the same form, or a hostile one) made this node skip its
    own record of the response."""
    from sqlalchemy import select

    from aurora.adapters.typeform_adapter import response_event_id
    from aurora.models import Event
    from aurora.webhooks import apply_typeform

    taken = event(1, type="typeform.response", data={"form_id": "F1", "token": "tok-1"})
    taken["id"] = response_event_id("F1", "tok-1")
    peer.body = page([taken])
    assert sync(runtime)["pulled"] == 1
    apply_typeform(runtime.engine, {"form_response": {"form_id": "F1", "token": "tok-1", "answers": []}})
    with runtime.db.read() as session:
        mine = list(session.scalars(select(Event).where(Event.origin == "test-node", Event.type == "typeform.response")))
    assert [e.id for e in mine] == [taken["id"]] and mine[0].data["token"] == "tok-1"


def _audit_records(runtime, n: int) -> None:
    from aurora import keys
    from aurora.models import Role

    for i in range(n):
        keys.create(runtime.db, f"k{uuid.uuid4().hex[:8]}{i}", Role.VIEWER)  # key changes are in the chain


def _cut(runtime, after_pk: int) -> None:
    from sqlalchemy import delete

    from aurora.models import AuditRecord

    with runtime.db.write() as session:  # someone with the database (not AURORA_HOME) cuts the log short
        session.execute(delete(AuditRecord).where(AuditRecord.pk > after_pk))


@pytest.mark.parametrize("cut", ["back_to_the_published_head", "everything"])
def test_a_log_cut_short_after_a_local_checkpoint_is_published_even_when_its_head_looks_unchanged(
        runtime, cut) -> None:
    """Before: ``witness.publish`` published nothing when the head was the one published last,
    or when the log was empty, so a log cut back to its last published checkpoint (losing the
    records beat's own checkpoint had covered since), or cut to nothing, never reached a witness."""
    from aurora import audit
    from aurora.federation import witness

    _audit_records(runtime, 4)
    first = witness.publish(runtime)
    assert first is not None and first["count"] >= 4
    _audit_records(runtime, 3)
    audit.checkpoint_since_last(runtime.settings, runtime.db)  # beat's local checkpoint covers them
    _cut(runtime, first["head_pk"] if cut == "back_to_the_published_head" else 0)
    published = witness.publish(runtime)
    assert published is not None and "is missing or changed" in published["problem"], published
    assert published["count"] == (first["count"] if cut == "back_to_the_published_head" else 0)
    assert witness.publish(runtime) is None  # said once, not at every interval


def test_a_witness_reports_a_checkpoint_whose_origin_says_its_log_lost_its_checkpoint(runtime, peer) -> None:
    """Before: a checkpoint's ``problem`` (the origin found its log no longer holds its own last
    checkpoint) was ignored by the witness: when the log had grown past the held count again, and
    the anchor (the held checkpoint's head) was intact, the cut went unreported."""
    from aurora.federation import witness

    held = {"count": 10, "head_pk": 10, "head_hash": "a" * 64, "created_at": "2026-01-01T00:00:00+00:00",
            "anchor": None}
    cut = {"count": 15, "head_pk": 17, "head_hash": "b" * 64, "created_at": "2026-01-01T00:10:00+00:00",
           "anchor": {"seq": 1, "head_pk": 10, "head_hash": "a" * 64, "count": 10},
           "problem": "record 13, the head of the checkpoint of 2026-01-01T00:05:00+00:00, is missing or changed"}
    peer.body = page([event(1, type="audit.checkpoint", data=held), event(2, type="audit.checkpoint", data=cut)])
    assert sync(runtime)["pulled"] == 2
    problem = witness.held(runtime.db, "evil")["problem"]
    assert problem and "record 13" in problem and "evil" in problem, problem
    assert witness.held(runtime.db, "evil")["checkpoint"]["data"]["count"] == 10  # the evidence stays
    assert "evil" in witness.problems(runtime.db)


@pytest.mark.timeout(420)  # two real nodes and a dozen CLI calls, on a machine shared with other suites
def test_a_cut_that_beats_checkpoint_saw_is_reported_by_the_witness_of_two_real_nodes(make_stack, tmp_path) -> None:
    """End to end: A's log is cut after beat's local checkpoint (not a published one) and grows
    past the published count again; A publishes with its problem, and B reports it."""
    import sqlite3

    from test_federation import events, link, make_node
    from test_federation import sync as sync_nodes

    a = make_node(make_stack, tmp_path, "node-a", ["node-b"])
    b = make_node(make_stack, tmp_path, "node-b", ["node-a"])
    link(b, a)
    for n in range(2):
        a.aurora("keys", "create", f"k{n}", "--role", "viewer")
    published = json.loads(a.aurora("federation", "witness", "publish").stdout)
    sync_nodes(b)
    for n in range(2):
        a.aurora("keys", "create", f"m{n}", "--role", "viewer")
    a.aurora("audit", "checkpoint")  # what beat does between two published checkpoints
    db = a.env["AURORA_DATABASE_URL"].removeprefix("sqlite:///")
    with sqlite3.connect(db) as conn:  # the database only: AURORA_HOME (and its checkpoints) untouched
        conn.execute("DELETE FROM audit_records WHERE pk > ?", (published["head_pk"],))
    for n in range(3):  # the log grows past the published count again; its chain is intact
        a.aurora("keys", "create", f"n{n}", "--role", "viewer")
    again = json.loads(a.aurora("federation", "witness", "publish").stdout)
    assert again["count"] > published["count"] and again["anchor"]["head_hash"] == published["head_hash"]
    assert "is missing or changed" in again["problem"]
    sync_nodes(b)
    held = b.http("GET", "/federation/witness/node-a").json()
    assert held["problem"] and held["problem"].startswith("audit log of node-a lost records"), held
    assert [e for e in events(b, origin="node-b") if e["type"] == "audit.witness_mismatch"]
    assert "node-a" in b.http("GET", "/health", key="").json()["components"]["federation"]["witness_problems"]


def test_a_checkpoint_written_into_the_database_is_not_signed_by_this_node(runtime, client) -> None:
    """Before: this node signed its own events when serving them, checkpoints included, so anyone
    who could write to its database (not AURORA_HOME) could add an ``audit.checkpoint`` row that
    matched what its witnesses held and have it served with this node's signature: a log cut
    short, and covered by such a row, was never reported. A checkpoint is now signed when it is
    published (after the audit chain was checked with the audit key), and served with that
    signature only."""
    from datetime import UTC, datetime

    from sqlalchemy import insert

    from aurora.federation import identity, tokens, witness
    from aurora.models import Event

    _audit_records(runtime, 3)
    published = witness.publish(runtime)
    with runtime.db.write() as session:  # a row that would have covered a cut
        session.execute(insert(Event).values(
            id=str(uuid.uuid4()), origin="test-node", type="audit.checkpoint", run_id=None,
            created_at=datetime.now(UTC), data={**published, "count": published["count"] + 5,
                                                "anchor": {"seq": 1, "head_pk": published["head_pk"],
                                                           "head_hash": published["head_hash"],
                                                           "count": published["count"]}}))
    peer_token = tokens.create(runtime.db, "evil")
    served = client.get("/federation/events?since=0&limit=100", headers={"Authorization": f"Bearer {peer_token}"})
    checkpoints = [e for e in served.get_json()["events"] if e["type"] == "audit.checkpoint"]
    assert len(checkpoints) == 2
    key = identity.raw(identity.decode(runtime.identity.public_key))

    def genuine(item: dict[str, Any]) -> bool:
        return identity.valid(key, item["signature"], signing.canonical(
            item["id"], item["origin"], item["origin_seq"], item["type"], item["run_id"],
            signing.parse_time(item["created_at"]), item["data"]))

    assert genuine(checkpoints[0]) and checkpoints[0]["data"] == published
    assert not genuine(checkpoints[1])
    # the other events are signed as they are served, as before
    assert all(genuine(e) for e in served.get_json()["events"] if e["type"] != "audit.checkpoint")


@pytest.mark.parametrize("ask", ["witnesses", "identity"])
def test_a_trickling_peer_cannot_hold_audit_verify_witnesses_or_registration_past_their_deadline(
        runtime, monkeypatch, ask) -> None:
    """Before: ``aurora audit verify --witnesses`` (asking each peer what it holds) and ``aurora
    nodes register`` (reading the peer's identity) used a per-read timeout and read the whole
    answer: a peer sending a byte a second held them for as long as it liked (and a huge answer
    sat in memory). They now have the sync's limits: a wall-clock deadline, a byte cap, no redirects."""
    import time

    from aurora.errors import AuroraError
    from aurora.federation import witness

    monkeypatch.setattr(witness, "ASK_TIMEOUT", 2.0)
    monkeypatch.setattr(registry, "IDENTITY_TIMEOUT", 2.0)
    with HostilePeer() as fake:
        fake.kind, fake.interval = "trickle_body", 0.5
        fake.body = {"node": "evil", "public_key": EVIL_PUBLIC, "checkpoint": None, "pad": "x" * 400}
        registry.register(runtime.db, fake.url, "evil", TOKEN, public_key=EVIL_PUBLIC,
                          secret_path=runtime.settings.federation_secret_path)
        started = time.monotonic()
        if ask == "witnesses":
            [answer] = witness.ask(runtime)
            assert answer["peer"] == "evil" and "deadline" in answer["error"], answer
        else:
            with pytest.raises(AuroraError) as refused:
                registry.fetch_identity(fake.url)
            assert "deadline" in str(refused.value)
        assert time.monotonic() - started < 4.0
        fake.kind, fake.location = "redirect", "http://127.0.0.1:9/elsewhere?token=secret"
        if ask == "witnesses":
            [answer] = witness.ask(runtime)
            assert "redirect" in answer["error"] and "secret" not in answer["error"], answer
        else:
            with pytest.raises(AuroraError) as refused:
                registry.fetch_identity(fake.url)
            assert "redirect" in str(refused.value) and "secret" not in str(refused.value)


def test_an_origin_that_looks_like_this_node_or_is_no_node_name_is_never_introduced(runtime, peer) -> None:
    """Before: a relay could introduce a key for any string as an origin: ``TEST-NODE``, or
    ``test‑node`` with a non-breaking hyphen, read as this node on every page that names origins,
    and their events were stored (only the exact name was refused as this node's own)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from test_federation_bounds import EVIL_KEY
    from test_federation_trust import introduce, make_event, public_text

    from aurora.federation import trust

    key = Ed25519PrivateKey.generate()
    names = ["TEST-NODE", "test\u2011node", "test-node ", "-test-node", "node/a", "relayed-ok"]
    items = []
    for n, origin in enumerate(names, 1):
        item = make_event(key, origin, n, "run.succeeded", {})
        item["seq"] = n
        items.append(item)
    peer.body = {"node": "evil", "events": items, "last_seq": len(items), "has_more": False,
                 "keys": {origin: introduce(EVIL_KEY, "evil", origin, public_text(key)) for origin in names}}
    result = sync(runtime)
    assert result["pulled"] == 1 and result["rejected"] == 5, result
    from aurora.federation.models import Node

    with runtime.db.read() as session:
        assert session.get(Node, "evil").rejected == {"own_origin": 1, "unknown_origin": 4}
    assert sorted(k["origin"] for k in trust.listing(runtime.db)) == ["evil", "relayed-ok"]


def _checkpoint(seq: int, count: int, head_pk: int, head_hash: str, anchor: dict | None) -> dict[str, Any]:
    return event(seq, type="audit.checkpoint", data={"count": count, "head_pk": head_pk, "head_hash": head_hash,
                                                     "created_at": f"2026-01-01T00:0{seq}:00+00:00", "anchor": anchor})


def test_a_relay_holding_back_the_checkpoint_that_shows_a_cut_cannot_suppress_the_report(runtime, peer) -> None:
    """Before: a checkpoint linked to one the witness had not seen was taken as the new one held
    (the skipped one "came by a slower path"), so a relay that held back the checkpoint showing
    the cut, and passed on the next, made the witness forget its evidence. Now the witness keeps
    what it holds until the missing link arrives, and checks it then, with what followed it."""
    from aurora.federation import witness

    cp1 = _checkpoint(1, 10, 10, "a" * 64, None)
    cut = _checkpoint(2, 5, 5, "b" * 64, {"seq": 1, "head_pk": 10, "head_hash": None, "count": 5})
    grown = _checkpoint(3, 12, 12, "c" * 64, {"seq": 2, "head_pk": 5, "head_hash": "b" * 64, "count": 5})
    peer.body = page([cp1])
    assert sync(runtime)["pulled"] == 1
    peer.body = page([grown])  # the cut one held back
    peer.body["last_seq"] = 3
    assert sync(runtime)["pulled"] == 1
    held = witness.held(runtime.db, "evil")
    assert held["checkpoint"]["data"]["count"] == 10 and held["problem"] is None, held
    peer.body = page([cut])  # it comes at last (by this relay or another path)
    peer.body["last_seq"] = 4
    assert sync(runtime)["pulled"] == 1
    held = witness.held(runtime.db, "evil")
    assert held["problem"] and "cut short" in held["problem"], held


def test_checkpoints_that_arrive_out_of_order_are_all_checked_and_the_newest_held(runtime, peer) -> None:
    """An honest diamond delivers checkpoints out of order: the witness checks the late one and
    then the ones after it that were stored meanwhile."""
    from aurora.federation import witness

    cps = [_checkpoint(1, 10, 10, "a" * 64, None),
           _checkpoint(2, 11, 11, "b" * 64, {"seq": 1, "head_pk": 10, "head_hash": "a" * 64, "count": 10}),
           _checkpoint(3, 12, 12, "c" * 64, {"seq": 2, "head_pk": 11, "head_hash": "b" * 64, "count": 11}),
           _checkpoint(4, 13, 13, "d" * 64, {"seq": 3, "head_pk": 12, "head_hash": "c" * 64, "count": 12})]
    for n, order in enumerate([[0], [2], [3], [1]], 1):
        peer.body = page([cps[i] for i in order])
        peer.body["last_seq"] = n
        assert sync(runtime)["pulled"] == 1
    held = witness.held(runtime.db, "evil")
    assert held["problem"] is None and held["checkpoint"]["data"]["count"] == 13, held


def test_a_token_sealed_by_the_upgrade_is_gone_from_the_database_files(runtime) -> None:
    """Before: ``aurora db upgrade`` encrypted a peer token stored in plain text by an older
    Aurora, but the plain text stayed in SQLite's write-ahead log (and could stay in the freed
    space of its page) until a later checkpoint: a copy of the database's files still held it."""
    from sqlalchemy import text

    from aurora.federation import vault

    token = "aurfed_" + "P" * 43
    registry.register(runtime.db, "http://127.0.0.1:9", "evil", token, public_key=EVIL_PUBLIC,
                      secret_path=runtime.settings.federation_secret_path)
    with runtime.db.write() as session:  # as an Aurora before tokens were sealed stored it
        session.execute(text("UPDATE nodes SET token = :t WHERE name = 'evil'"), {"t": token})
    with runtime.db.engine.connect() as connection:  # long ago: it is in the database file itself
        connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    assert vault.seal_plaintext(runtime.db, runtime.settings.federation_secret_path) == 1
    path = Path(runtime.settings.database_url.removeprefix("sqlite:///"))
    for name in (path, path.with_name(path.name + "-wal")):
        assert not name.exists() or token.encode() not in name.read_bytes(), name
    assert vault.open_token(runtime.settings.federation_secret_path, _stored_token(runtime)) == token


def _stored_token(runtime) -> str:
    from aurora.federation.models import Node

    with runtime.db.read() as session:
        return session.get(Node, "evil").token


def test_a_peers_words_reach_the_operators_terminal_without_control_characters(runtime, env) -> None:
    """Before: what a peer said was printed as it came: a witness answering ``aurora audit verify
    --witnesses`` with a ``problem`` of terminal escapes could erase the lines above and print
    "audit chain intact" of its own (and a peer's error message did the same in ``aurora nodes
    list``). A peer's words now reach the terminal with control characters written out."""
    import os
    import subprocess
    import sys

    from fakes import FakeServer, Reply

    lie = "\x1b[2K\r\x1b[1A\x1b[2Kaudit chain intact (99 records); head 0000000000000000\n"

    def answer(request) -> Reply:
        if request.path.startswith("/federation/witness/"):
            return Reply(200, {"node": "evil", "origin": "test-node", "checkpoint": None, "problem": lie})
        return Reply(503, {"error": "busy", "message": lie})

    _audit_records(runtime, 2)
    with FakeServer(default=answer) as evil:
        registry.register(runtime.db, evil.url, "evil", TOKEN, public_key=EVIL_PUBLIC,
                          secret_path=runtime.settings.federation_secret_path)
        assert sync(runtime)["error"].startswith("HTTP 503")
        run = {**os.environ, **env, "NO_COLOR": "1"}
        # bytes, as a terminal gets them (text mode would turn a \r into a line break)
        verified = subprocess.run([sys.executable, "-m", "aurora", "audit", "verify", "--witnesses"], env=run,
                                  capture_output=True, timeout=120)
        listed = subprocess.run([sys.executable, "-m", "aurora", "nodes", "list"], env=run,
                                capture_output=True, timeout=120)
    assert verified.returncode == 1, verified.stdout + verified.stderr  # a witness reports a problem
    for done in (verified, listed):
        out = done.stdout + done.stderr
        assert b"\x1b" not in out and b"\r" not in out, out
        # the peer's text stays on the line that says it is the peer's: it cannot print a line of its own
        assert not any(line.startswith(b"audit chain intact (99") for line in out.splitlines()), out
    assert b"evil reports: \\x1b[2K\\r" in verified.stdout, verified.stdout
    assert b"\\x1b[2K" in listed.stdout, listed.stdout


@pytest.mark.parametrize("offered", [["not", "a", "key"], {"a": 1}, 7, None])
def test_an_introduction_whose_key_is_not_text_is_ignored_not_a_crash(runtime, peer, offered) -> None:
    """Before: an introduction's ``public_key`` that was a list or an object raised TypeError
    (unhashable, in the key decoder's cache) out of the sync: no failure recorded, no backoff,
    the peer's sync wedged on that page."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from test_federation_trust import make_event

    relayed = make_event(Ed25519PrivateKey.generate(), "other", 1, "run.succeeded", {})
    peer.body = {"node": "evil", "events": [relayed, page([event(2)])["events"][0]], "last_seq": 2,
                 "has_more": False, "keys": {"other": {"public_key": offered, "signature": "x" * 86}}}
    result = sync(runtime)
    assert result["pulled"] == 1 and result["rejected"] == 1, result
    from aurora.federation.models import Node

    with runtime.db.read() as session:
        assert session.get(Node, "evil").rejected == {"unknown_origin": 1}
