"""The holes a red team left in issue 16 (federation you can trust), each with the test that
failed before its fix: a token in a URL beyond the seed's curl, the size cap measured on a form
that changes on the way, a witness that goes stale without a word, `aurora audit verify
--witnesses` claiming what no witness said, and a peer token in `ps`. The hostile peers are fakes on
loopback speaking the documented wire format (test_federation_bounds' ``evil``); the node is
Aurora's real runtime and web app, or real processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakes import HostilePeer
from test_federation_bounds import DEADLINE, EVIL_PUBLIC, PAGE, TOKEN

from aurora.federation import registry, tokens


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


# -- 4. ?token= only where the seed's curl used it ------------------------------------------------

def test_a_token_in_the_query_is_taken_on_federation_events_only(runtime, client, api_keys, caplog) -> None:
    """Before: ``/federation/nodes`` and ``/federation/witness/ORIGIN`` took ``?token=`` too, a
    peer token or even an admin key, so a URL (in a proxy's log, a browser's history) could carry
    an admin key; the issue keeps ``?token=`` for the seed's curl of /federation/events only."""
    token = tokens.create(runtime.db, "evil")
    for path in ("/federation/nodes", "/federation/witness/evil"):
        for secret in (token, api_keys.admin):
            answer = client.get(path, query_string={"token": secret})
            assert answer.status_code == 401, (path, answer.get_json())
            body = answer.get_data(as_text=True)
            assert secret not in body and "/federation/events only" in body
            assert "Deprecation" not in answer.headers
        # the header works as before
        assert client.get(path, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    pulled = client.get("/federation/events", query_string={"token": token})
    assert pulled.status_code == 200 and pulled.headers["Deprecation"].startswith("@")
    assert token not in caplog.text and api_keys.admin not in caplog.text


# -- 2. `aurora audit verify --witnesses` claims only what witnesses said -----------------------------

def _verify_witnesses(runtime):
    from click.testing import CliRunner

    from aurora.cli import main

    return CliRunner().invoke(main, ["audit", "verify", "--witnesses"])


def _served_checkpoint(runtime) -> dict:
    """This node's newest checkpoint event as a witness serves it back (signed at publishing)."""
    from sqlalchemy import select

    from aurora.federation import signing, witness
    from aurora.models import Event

    assert witness.publish(runtime) is not None
    columns = [getattr(Event, name) for name in signing.SERVED_COLUMNS]
    with runtime.db.read() as session:
        row = session.execute(select(*columns).where(Event.type == witness.CHECKPOINT)
                              .order_by(Event.seq.desc()).limit(1)).one()
    [event] = signing.served(runtime.identity, [row])
    return event


def test_audit_verify_witnesses_does_not_say_verified_when_no_witness_answered(runtime, api_keys) -> None:
    """Before: with every witness unreachable (or none holding a checkpoint) the command printed
    "audit chain intact" and exited 0, as if the witnesses had confirmed the chain."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from fakes import FakeServer, Reply

    from aurora.federation import identity

    other = identity.encode(Ed25519PrivateKey.generate().public_key())
    assert _verify_witnesses(runtime).exit_code == 3  # no peer registered at all
    registry.register(runtime.db, "http://127.0.0.1:9", "elsewhere", TOKEN, public_key=other,
                      secret_path=runtime.settings.federation_secret_path)
    done = _verify_witnesses(runtime)
    assert done.exit_code == 3, done.output
    assert "not verified by any witness: no witness answered (0 of 1" in done.output
    assert "audit chain intact (" not in done.output

    held: dict = {"checkpoint": None, "problem": None}
    with FakeServer(lambda request: Reply(200, {"node": "evil", "origin": "test-node", **held})) as fake:
        registry.register(runtime.db, fake.url, "evil", TOKEN, public_key=EVIL_PUBLIC,
                          secret_path=runtime.settings.federation_secret_path)
        done = _verify_witnesses(runtime)
        assert done.exit_code == 3, done.output
        assert "no witness holds a checkpoint of this node yet (1 of 2 witness(es) answered, 0 hold" in done.output
        held["checkpoint"] = _served_checkpoint(runtime)
        done = _verify_witnesses(runtime)
    assert done.exit_code == 0, done.output
    assert "1 of 2 witness(es) answered, 1 hold(s) a checkpoint of this node, and the chain agrees with it" in done.output
    assert "audit chain intact (" in done.output


# -- 3. a peer token never on a command line ----------------------------------------------------

def _register(runtime, *args: str, env: dict | None = None, input: str | None = None):
    from click.testing import CliRunner

    from aurora.cli import main

    return CliRunner().invoke(main, ["nodes", "register", "http://127.0.0.1:9", "evil", *args,
                                     "--public-key", EVIL_PUBLIC], env=env, input=input)


def _stored_token(runtime) -> str:
    from aurora.federation import vault
    from aurora.federation.models import Node

    with runtime.db.read() as session:
        stored = session.get(Node, "evil").token
    return vault.open_token(runtime.settings.federation_secret_path, stored)


def test_a_peer_token_is_taken_from_a_file_a_variable_or_stdin_and_warned_about_on_the_command_line(
        runtime, tmp_path) -> None:
    """Before: the token was an argument only (or -): while `aurora nodes register URL NAME TOKEN`
    ran, any user of the machine read it in `ps`."""
    for n, (args, env, stdin) in enumerate([((), {"AURORA_PEER_TOKEN": "aurfed_from_env_0123456789abcdefghij"}, None),
                                            (("--token-file", "FILE"), {"AURORA_PEER_TOKEN": ""}, None),
                                            (("-",), {"AURORA_PEER_TOKEN": ""}, "aurfed_from_stdin_0123456789abcdefghij\n")]):
        if args[:1] == ("--token-file",):
            (tmp_path / "token").write_text("aurfed_from_file_0123456789abcdefghij\nignored\n")
            args = ("--token-file", str(tmp_path / "token"))
        done = _register(runtime, *args, env=env, input=stdin)
        assert done.exit_code == 0, done.output
        assert "warning" not in done.stderr
        assert _stored_token(runtime) == ["aurfed_from_env_0123456789abcdefghij", "aurfed_from_file_0123456789abcdefghij", "aurfed_from_stdin_0123456789abcdefghij"][n]
    # the old form still works, with a warning that says where else to give it
    done = _register(runtime, "aurfed_on_the_line_0123456789abcdefghij", env={"AURORA_PEER_TOKEN": ""})
    assert done.exit_code == 0 and _stored_token(runtime) == "aurfed_on_the_line_0123456789abcdefghij"
    assert "visible to every user of this machine" in done.stderr and "aurfed_on_the_line_0123456789abcdefghij" not in done.stderr
    twice = _register(runtime, "aurfed_a", env={"AURORA_PEER_TOKEN": "aurfed_b"})
    assert twice.exit_code == 2 and "more than once" in twice.stderr and "aurfed_" not in twice.output
    none = _register(runtime, env={"AURORA_PEER_TOKEN": ""}, input="")
    assert none.exit_code == 2 and "no token" in none.stderr


def test_the_seeds_helper_hands_the_token_over_off_the_command_line(tmp_path) -> None:
    """Before: ./federation_helpers.sh register URL NAME TOKEN ran `aurora nodes register URL NAME
    TOKEN`, the token in the argv of a process as long as it ran."""
    import subprocess

    from conftest import ROOT

    seen = tmp_path / "seen.json"
    fake = tmp_path / "aurora"
    fake.write_text("#!/usr/bin/env python3\nimport json, os, sys\n"
                    f"open({str(seen)!r}, 'w').write(json.dumps({{'argv': sys.argv[1:], "
                    "'token': os.environ.get('AURORA_PEER_TOKEN')}))\n")
    fake.chmod(0o755)
    done = subprocess.run([str(ROOT / "federation_helpers.sh"), "register", "http://127.0.0.1:9", "node-a",
                           "aurfed_secret"], env={"PATH": "/usr/bin:/bin", "AURORA_CLI": str(fake)},
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    called = json.loads(seen.read_text())
    assert called == {"argv": ["nodes", "register", "http://127.0.0.1:9", "node-a"], "token": "aurfed_secret"}


# -- 5. the 64 KiB cap is measured on what is signed and stored, the same at every hop -------------

def test_the_event_cap_is_measured_on_the_signed_form_the_same_at_every_hop() -> None:
    """Before: the cap was measured on the event as received, in UTF-8, with the serving node's
    ``seq`` and its way of writing the time: an event at the cap from its origin was over it once a
    relay served it under a longer seq, and "é" counted 2 bytes though it is signed, and stored,
    as the 6 of \\u00e9."""
    from datetime import datetime, timedelta, timezone

    from test_federation_bounds import event

    from aurora.federation.fetch import MAX_EVENT_BYTES, event_bytes

    item = event(1, data={"pad": ""})
    item["data"]["pad"] = "x" * (MAX_EVENT_BYTES - event_bytes(item))
    assert event_bytes(item) == MAX_EVENT_BYTES
    relayed = {**item, "seq": 123_456_789_012}  # the relay's cursor, not part of the event
    when = datetime.fromisoformat(item["created_at"]).astimezone(timezone(timedelta(hours=5, minutes=30)))
    relayed["created_at"] = when.isoformat()  # the same instant, written another way
    assert event_bytes(relayed) == MAX_EVENT_BYTES


def test_an_event_under_the_cap_in_utf8_but_over_it_as_signed_and_stored_is_refused(runtime, peer) -> None:
    """Before: 15,000 "é" were 30 KB as measured (UTF-8), so the event was stored: 90 KB in the
    database's JSON (\\u00e9 each), over the 64 KiB cap."""
    from sqlalchemy import func, select
    from test_federation_bounds import event, page, sync

    from aurora.federation.fetch import MAX_EVENT_BYTES
    from aurora.models import Event

    wide = event(2, data={"pad": "é" * 15_000})
    peer.body = page([event(1), wide, event(3)])
    result = sync(runtime)
    assert result["pulled"] == 2 and f"event {wide['id']} is " in result["refused"], result
    with runtime.db.read() as session:
        largest = session.scalar(select(func.max(func.length(Event.data))).where(Event.origin == "evil"))
        assert session.scalar(select(func.count()).where(Event.id == wide["id"])) == 0
    assert largest < MAX_EVENT_BYTES


# -- 1. a witness says when an origin's checkpoints stop reaching it ------------------------------

def _signed(key, origin: str, seq: int, type_: str, data: dict, made) -> dict:
    import uuid

    from aurora.federation import identity, signing

    item = {"id": str(uuid.uuid4()), "seq": seq, "origin": origin, "origin_seq": seq, "type": type_,
            "run_id": None, "created_at": made.isoformat(), "data": data}
    item["signature"] = identity.encode_signature(key.sign(signing.canonical(
        item["id"], origin, seq, type_, None, made, data)))
    return item


def _checkpoint(key, origin: str, seq: int, made, anchor: dict | None) -> dict:
    return _signed(key, origin, seq, "audit.checkpoint",
                   {"count": 5, "head_pk": 5, "head_hash": "ab" * 32, "created_at": made.isoformat(), "anchor": anchor},
                   made)


def _federation_health(client) -> dict:
    return client.get("/health").get_json()["components"]["federation"]


def _stale_reports(runtime) -> list[dict]:
    from sqlalchemy import select

    from aurora.federation import witness
    from aurora.models import Event

    with runtime.db.read() as session:
        return [e.data for e in session.scalars(select(Event).where(Event.origin == "test-node",
                                                                     Event.type == witness.STALE))]


def test_a_relay_withholding_an_origins_checkpoints_is_reported_stale_and_cleared_by_a_fresh_one(
        runtime, peer, client) -> None:
    """Before: a relay that passed on an origin's events but none of its checkpoints left the
    witness holding an ever older checkpoint without a word (no event, /health fine)."""
    from datetime import UTC, datetime, timedelta

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from test_federation_bounds import EVIL_KEY, sync
    from test_federation_trust import introduce, public_text

    x = Ed25519PrivateKey.generate()
    now = datetime.now(UTC)
    keys = {"relayed-x": introduce(EVIL_KEY, "evil", "relayed-x", public_text(x))}
    old = _checkpoint(x, "relayed-x", 1, now - timedelta(hours=2), None)
    items = [old, _signed(x, "relayed-x", 2, "run.succeeded", {}, now - timedelta(hours=2))]
    peer.body = {"node": "evil", "events": items, "keys": keys, "last_seq": 2, "has_more": False}
    assert sync(runtime)["pulled"] == 2
    assert _federation_health(client)["ok"] is True and _stale_reports(runtime) == []

    # x's events of the last hour come through evil; its checkpoints of that hour do not
    later = [_signed(x, "relayed-x", n, "run.succeeded", {}, now - timedelta(minutes=60 - n)) for n in (3, 4)]
    for n, item in enumerate(later, 3):
        item["seq"] = n
    peer.body = {"node": "evil", "events": later, "keys": keys, "last_seq": 4, "has_more": False}
    assert sync(runtime)["pulled"] == 2
    health = _federation_health(client)
    assert health["ok"] is False and "relayed-x" in health["witness_stale"], health
    assert "no fresh audit checkpoint of relayed-x" in health["error"]
    [report] = _stale_reports(runtime)
    assert report["origin"] == "relayed-x" and "held back on the way" in report["problem"]
    assert "witness_problems" not in health  # stale is no mismatch: nothing to clear by hand

    # more of the same is reported once; then a fresh checkpoint linked to the held one clears it
    again = [_signed(x, "relayed-x", 5, "run.succeeded", {}, now)]
    again[0]["seq"] = 5
    peer.body = {"node": "evil", "events": again, "keys": keys, "last_seq": 5, "has_more": False}
    sync(runtime)
    assert len(_stale_reports(runtime)) == 1
    fresh = _checkpoint(x, "relayed-x", 6, now, {"seq": 1, "head_pk": 5, "head_hash": "ab" * 32, "count": 5})
    fresh["seq"] = 6
    peer.body = {"node": "evil", "events": [fresh], "keys": keys, "last_seq": 6, "has_more": False}
    assert sync(runtime)["pulled"] == 1
    health = _federation_health(client)
    assert health["ok"] is True and "witness_stale" not in health, health


def test_a_peer_that_answers_but_sends_no_checkpoint_is_stale_and_one_that_is_down_is_only_down(
        runtime, peer, client, env) -> None:
    """A direct peer whose pulls succeed, all caught up, with its newest checkpoint three sync
    intervals old publishes none (or holds its own back): stale. A peer that cannot be reached
    meanwhile is a peer down (its own report), never stale: nothing was heard of it."""
    import time
    from datetime import UTC, datetime

    from test_federation_bounds import EVIL_KEY, sync

    from aurora.federation.models import Node

    path = Path(env["AURORA_POLICY_FILE"])
    policy = json.loads(path.read_text())
    policy["federation"]["sync_interval"] = 1  # stale after 3 s
    path.write_text(json.dumps(policy))
    deadline = time.monotonic() + 10
    while runtime.policies.current().federation["sync_interval"] != 1:  # hot-reloaded
        assert time.monotonic() < deadline
        time.sleep(0.2)
    peer.body = {"node": "evil", "events": [_checkpoint(EVIL_KEY, "evil", 1, datetime.now(UTC), None)],
                 "last_seq": 1, "has_more": False}
    assert sync(runtime)["pulled"] == 1
    real_url = peer.url
    registry.register(runtime.db, "http://127.0.0.1:9", "evil", TOKEN, public_key=EVIL_PUBLIC,
                      secret_path=runtime.settings.federation_secret_path)  # evil is down
    time.sleep(3.5)
    assert "error" in sync(runtime)
    assert _stale_reports(runtime) == [] and "witness_stale" not in _federation_health(client)

    registry.register(runtime.db, real_url, "evil", TOKEN, public_key=EVIL_PUBLIC,
                      secret_path=runtime.settings.federation_secret_path)  # back, with nothing new
    with runtime.db.write() as session:
        session.get(Node, "evil").next_attempt_at = None
    assert sync(runtime)["pulled"] == 0
    [report] = _stale_reports(runtime)
    assert report["origin"] == "evil" and "evil answered this node's pull" in report["problem"]
    assert "evil" in _federation_health(client)["witness_stale"]


def test_an_origin_publishes_its_unchanged_head_again_at_every_interval(runtime, api_keys) -> None:
    """Before: an unchanged head was never published again, so a witness could not tell an
    origin whose log did not move from one whose checkpoints were held back on the way."""
    from aurora.federation import witness

    first = witness.publish(runtime)
    assert first is not None and witness.publish(runtime) is None  # within half an interval: nothing new
    again = witness.publish(runtime, refresh_after=0.0)
    assert again is not None and (again["count"], again["head_hash"]) == (first["count"], first["head_hash"])
    assert again["anchor"]["head_hash"] == first["head_hash"] and "problem" not in again


# -- the red team -----------------------------------------------------------------------------------

def test_a_peer_cannot_make_this_node_show_the_token_it_presents_to_every_other_peer(
        runtime, peer, client, api_keys) -> None:
    """Before: a peer echoing our token back in an error's message, or writing it into an event's
    type, had it stored as its ``last_error`` / ``last_rejection``; GET /federation/nodes shows
    those to every peer token (and the token is sealed at rest for a reason)."""
    from test_federation_bounds import event, page, sync

    other = tokens.create(runtime.db, "elsewhere")  # another peer, reading /federation/nodes

    def shown() -> str:
        answer = client.get("/federation/nodes", headers={"Authorization": f"Bearer {other}"})
        assert answer.status_code == 200
        return json.dumps(answer.get_json())

    peer.body = page([event(1, origin="test-node", type=TOKEN[:64])])  # own origin: refused, its type quoted
    result = sync(runtime)
    assert result.get("rejected") == 1, result
    assert TOKEN not in shown() and "REDACTED" in shown()

    from fakes import FakeServer, Reply

    from aurora.federation.models import Node

    with FakeServer(lambda request: Reply(401, {"error": "unauthorized", "message": f"wrong token {TOKEN}"})) as echo:
        registry.register(runtime.db, echo.url, "evil", TOKEN, public_key=EVIL_PUBLIC,
                          secret_path=runtime.settings.federation_secret_path)
        result = sync(runtime)
    assert "HTTP 401" in result["error"] and TOKEN not in json.dumps(result)
    with runtime.db.read() as session:
        assert TOKEN not in (session.get(Node, "evil").last_error or "")
    assert TOKEN not in shown()


def test_a_peer_dying_mid_answer_stores_nothing_and_is_a_failure_with_a_heartbeat(runtime, peer) -> None:
    """A peer whose process dies after the headers and half a page: nothing of the page stored,
    the cursor kept, a failure that backs off, and the peer seen (it answered). Before: it was
    "unreachable" with no heartbeat, as if it had never answered (its state went to down)."""
    from test_federation_bounds import event, page, stored, sync

    from aurora.federation.models import Node

    peer.body = page([event(1), event(2), event(3)])
    peer.kind = "dies"
    result = sync(runtime)
    assert result["pulled"] == 0 and "broke off" in result["error"], result
    assert stored(runtime) == 0
    with runtime.db.read() as session:
        node = session.get(Node, "evil")
        assert node.cursor == 0 and node.failures == 1 and node.next_attempt_at is not None
        assert node.last_seen is not None  # it answered: not "never seen"
    peer.kind = "page"
    with runtime.db.write() as session:
        session.get(Node, "evil").next_attempt_at = None
    assert sync(runtime)["pulled"] == 3


@pytest.mark.parametrize("number", ["the_held_ones", "an_older_ones"])
def test_an_origin_whose_checkpoint_numbers_start_again_was_rolled_back(runtime, peer, client, number) -> None:
    """Before: an origin whose database was put back to an earlier state numbers its events again
    from there; its new checkpoints came under numbers the witness had seen, were taken for older
    ones by another path and ignored, silently, until the numbers passed the held one's again."""
    from datetime import UTC, datetime, timedelta

    from test_federation_bounds import EVIL_KEY, sync

    now = datetime.now(UTC)
    first = _checkpoint(EVIL_KEY, "evil", 3, now - timedelta(minutes=20), None)
    second = _checkpoint(EVIL_KEY, "evil", 5, now - timedelta(minutes=10),
                         {"seq": 3, "head_pk": 5, "head_hash": "ab" * 32, "count": 5})
    peer.body = {"node": "evil", "events": [first, second], "last_seq": 5, "has_more": False}
    assert sync(runtime)["pulled"] == 2
    assert _federation_health(client)["ok"] is True
    again = _checkpoint(EVIL_KEY, "evil", 5 if number == "the_held_ones" else 3, now, None)
    again["seq"] = 6
    peer.body = {"node": "evil", "events": [again], "last_seq": 6, "has_more": False}
    assert sync(runtime)["pulled"] == 1
    health = _federation_health(client)
    assert health["ok"] is False and "rolled back" in health["witness_problems"]["evil"], health
