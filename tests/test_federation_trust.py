"""Federation you can trust: node identities, origin-signed events, a hostile peer on loopback,
relayed keys, witnessed audit logs and tokens at rest. Real Aurora nodes on loopback; the hostile
peer is a small fake server that signs with its own keys, following the documented encoding."""

from __future__ import annotations

import base64
import json
import sqlite3
import stat
import uuid
from datetime import UTC, datetime
from pathlib import Path

import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from fakes import FakeServer, Reply
from test_federation import events, link, make_node, submit, sync


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def public_text(key: Ed25519PrivateKey) -> str:
    return "ed25519:" + b64(key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def compact(body: dict) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def signed_bytes(event: dict) -> bytes:
    """The encoding docs/federation.md documents, written here independently of Aurora's code."""
    when = datetime.fromisoformat(event["created_at"]).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return b"aurora-event-v1\n" + compact({"created_at": when, "data": event["data"], "id": event["id"],
                                           "origin": event["origin"], "run_id": event["run_id"],
                                           "seq": event["origin_seq"], "type": event["type"]})


def make_event(key: Ed25519PrivateKey, origin: str, seq: int, type_: str, data: dict, run_id: str | None = None) -> dict:
    event = {"id": str(uuid.uuid4()), "seq": seq, "origin": origin, "origin_seq": seq, "type": type_,
             "run_id": run_id, "created_at": datetime.now(UTC).isoformat(), "data": data}
    event["signature"] = b64(key.sign(signed_bytes(event)))
    return event


def introduce(by_key: Ed25519PrivateKey, by: str, origin: str, public_key: str) -> dict:
    body = b"aurora-introduction-v1\n" + compact({"by": by, "origin": origin, "public_key": public_key})
    return {"public_key": public_key, "signature": b64(by_key.sign(body))}


def verifies(public_key: str, event: dict) -> bool:
    raw = base64.urlsafe_b64decode(public_key.removeprefix("ed25519:") + "=")
    try:
        Ed25519PublicKey.from_public_bytes(raw).verify(base64.urlsafe_b64decode(event["signature"] + "=="),
                                                       signed_bytes(event))
    except Exception:  # noqa: BLE001 - any failure is a bad signature
        return False
    return True


class HostilePeer:
    """A peer named ``evil`` on loopback that serves its identity and one scripted page."""

    def __init__(self) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.page: dict = {"events": [], "keys": {}}
        self.server = FakeServer(self.answer)

    def answer(self, request) -> Reply:
        if request.path == "/federation/identity":
            return Reply(200, {"node": "evil", "public_key": public_text(self.key), "algorithm": "ed25519"})
        if request.path == "/federation/events":
            items = self.page["events"]
            since = int(request.query.get("since", ["0"])[0])
            return Reply(200, {"node": "evil", "events": [e for e in items if e["seq"] > since],
                               "keys": self.page["keys"], "last_seq": max([since] + [e["seq"] for e in items]),
                               "has_more": False})
        return Reply(404, {"error": "not_found"})


def test_identity_is_made_once_shown_served_and_pinned_at_registration(make_stack, tmp_path) -> None:
    a = make_node(make_stack, tmp_path, "node-a", ["node-b"])
    b = make_node(make_stack, tmp_path, "node-b", ["node-a"])
    key_file = Path(a.env["AURORA_HOME"]) / "node_identity.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    shown = json.loads(a.aurora("federation", "identity", "--json").stdout)
    served = requests.get(a.url + "/federation/identity", timeout=5).json()
    assert served == shown and shown["node"] == "node-a" and shown["public_key"].startswith("ed25519:")
    assert shown["fingerprint"] in a.aurora("federation", "identity").stdout
    assert json.loads(a.aurora("federation", "identity", "--json").stdout) == shown  # made once

    token = a.aurora("federation", "token", "create", "node-b").stdout.strip()
    wrong = b.aurora("nodes", "register", a.url, "node-a", token, "--fingerprint", "0000:0000:0000:0000:0000",
                     check=False)
    assert wrong.returncode == 2 and shown["fingerprint"] in wrong.stderr + wrong.stdout
    misnamed = b.aurora("nodes", "register", a.url, "node-x", token, check=False)
    assert misnamed.returncode == 2 and "is node 'node-a'" in misnamed.stderr
    done = b.aurora("nodes", "register", a.url, "node-a", token, "--fingerprint", shown["fingerprint"])
    assert shown["fingerprint"] in done.stdout
    assert f"node-a               {shown['fingerprint']}  pinned" in b.aurora("federation", "keys").stdout
    # A different key for a pinned node is refused unless given on purpose.
    other = "ed25519:" + b64(bytes(31))  # not 32 bytes: refused
    changed = b.aurora("nodes", "register", a.url, "node-a", token, "--public-key", public_text(Ed25519PrivateKey.generate()))
    assert changed.returncode == 0
    again = b.aurora("nodes", "register", a.url, "node-a", token, check=False)
    assert again.returncode == 2 and "not the pinned" in again.stderr
    assert b.aurora("nodes", "register", a.url, "node-a", token, "--public-key", other, check=False).returncode == 2
    b.aurora("nodes", "register", a.url, "node-a", token, "--public-key", shown["public_key"])
    submit(a, 1)
    assert sync(b)[0]["pulled"] == len(events(a))
    assert b.http("GET", "/federation/nodes").json()["nodes"][0]["fingerprint"] == shown["fingerprint"]


def test_a_hostile_peer_cannot_store_forged_own_unknown_or_badly_signed_events(make_stack, tmp_path) -> None:
    a = make_node(make_stack, tmp_path, "node-a", ["evil", "honest"])
    [run_id] = submit(a, 1)  # no worker: it stays queued, whatever a peer claims about it
    relayed_key, ghost_key, honest_key = (Ed25519PrivateKey.generate() for _ in range(3))
    evil = HostilePeer()
    with evil.server:
        token = "aurfed_" + "x" * 43
        a.aurora("nodes", "register", evil.server.url, "evil", token)  # no terminal: pinned as shown
        a.aurora("nodes", "register", "http://127.0.0.1:9", "honest", token, "--public-key", public_text(honest_key))
        tampered = make_event(evil.key, "evil", 3, "run.succeeded", {"mode": "live"})
        tampered["data"] = {"mode": "live", "amount": 10_000}
        page = [
            # claiming this node's own origin: the CEO's approval "by phone", and the run's success
            make_event(evil.key, "node-a", 1, "approval.approved", {"voter": "ceo", "comment": "approved by the CEO by phone"},
                       run_id=run_id),
            make_event(evil.key, "node-a", 2, "run.succeeded", {"mode": "live"}, run_id=run_id),
            tampered,  # bad signature
            make_event(ghost_key, "ghost", 4, "run.cancelled", {}, run_id=run_id),  # nobody introduced ghost
            # claiming a pinned origin, with an introduction of evil's own key for it: the pin wins
            make_event(evil.key, "honest", 5, "run.succeeded", {}, run_id=run_id),
            # evil's own, validly signed events about the same run id: stored as evil's, never the run's
            make_event(evil.key, "evil", 6, "approval.approved", {"voter": "ceo"}, run_id=run_id),
            make_event(evil.key, "evil", 7, "run.succeeded", {"mode": "live"}, run_id=run_id),
            # relayed by evil with its origin's valid signature, the origin introduced by evil: accepted
            make_event(relayed_key, "relayed-x", 8, "run.succeeded", {"mode": "simulated"}),
        ]
        for n, event in enumerate(page, 1):
            event["seq"] = n
        evil.page = {"events": page, "keys": {
            "relayed-x": introduce(evil.key, "evil", "relayed-x", public_text(relayed_key)),
            "honest": introduce(evil.key, "evil", "honest", public_text(evil.key)),
            "ghost": introduce(ghost_key, "evil", "ghost", public_text(ghost_key)),  # not signed by evil
        }}
        [result] = sync(a, "evil")
    assert result["pulled"] == 3 and result["rejected"] == 5, result

    stored = {e["id"] for e in events(a)}
    accepted = {e["id"] for e in page[5:]}
    assert accepted <= stored and not {e["id"] for e in page[:5]} & stored
    held = {e["id"]: e for e in events(a, origin="relayed-x")}
    assert list(held) == [page[7]["id"]] and held[page[7]["id"]]["data"] == {"mode": "simulated"}
    assert events(a, origin="ghost") == [] and events(a, origin="honest") == []

    run = a.http("GET", f"/workflows/{run_id}").json()
    assert run["status"] == "queued" and run["approvals"]["votes"] == []
    assert {e["origin"] for e in run["timeline"]} == {"node-a"}
    assert not {e["id"] for e in run["timeline"]} & {e["id"] for e in page}

    [node] = [n for n in a.http("GET", "/federation/nodes").json()["nodes"] if n["name"] == "evil"]
    assert node["rejected"] == {"own_origin": 2, "bad_signature": 2, "unknown_origin": 1}
    assert node["last_rejection"].startswith("own_origin")
    metrics = a.http("GET", "/metrics").text
    assert 'aurora_federation_rejected_total{peer="evil",reason="own_origin"} 2.0' in metrics
    assert 'aurora_federation_rejected_total{peer="evil",reason="bad_signature"} 2.0' in metrics
    known = a.aurora("federation", "keys").stdout
    assert "relayed-x" in known and "introduced by evil" in known and "ghost" not in known
    honest = [line for line in known.splitlines() if line.startswith("honest")]
    assert len(honest) == 1 and "pinned" in honest[0]
    # the same page again adds nothing and counts again (the cursor moved past it)
    assert sync(a, "evil")[0]["pulled"] == 0


def _stored_events(node) -> list[dict]:
    """Every event in a node's database with its origin's seq and signature, read with sqlite3."""
    db = node.env["AURORA_DATABASE_URL"].removeprefix("sqlite:///")
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        rows = conn.execute("SELECT id, origin, origin_seq, signature, type, run_id, created_at, data FROM events").fetchall()
    out = []
    for row in rows:
        when = datetime.fromisoformat(row["created_at"])
        out.append({**dict(row), "data": json.loads(row["data"]),
                    "created_at": (when if when.tzinfo else when.replace(tzinfo=UTC)).isoformat()})
    return out


def test_a_diamond_replicates_exactly_once_with_every_relayed_signature_verified(make_stack, tmp_path) -> None:
    # A -> B -> D and A -> C -> D: D never registered A, and learns A's key from the first relay
    a = make_node(make_stack, tmp_path, "node-a", ["node-b", "node-c"])
    b = make_node(make_stack, tmp_path, "node-b", ["node-a", "node-d"])
    c = make_node(make_stack, tmp_path, "node-c", ["node-a", "node-d"])
    d = make_node(make_stack, tmp_path, "node-d", ["node-b", "node-c"])
    link(b, a)
    link(c, a)
    link(d, b)
    link(d, c)
    submit(a, 3)
    submit(b, 1)
    sync(b)
    sync(c)
    sync(d)
    submit(a, 2)  # more after the keys were learned
    sync(c)
    sync(b)
    sync(d)
    ids = [e["id"] for e in events(d)]
    assert len(ids) == len(set(ids))
    assert [e["id"] for e in events(d, origin="node-a")] == [e["id"] for e in events(a)]
    assert len(events(d, origin="node-b")) == len(events(b, origin="node-b"))
    nodes = d.http("GET", "/federation/nodes").json()["nodes"]
    assert all(n["rejected"] == {} for n in nodes), nodes
    keys = {line.split()[0]: line for line in d.aurora("federation", "keys").stdout.splitlines()}
    key_a = json.loads(a.aurora("federation", "identity", "--json").stdout)
    assert key_a["fingerprint"] in keys["node-a"] and "introduced by node-" in keys["node-a"]
    assert "pinned" in keys["node-b"] and "pinned" in keys["node-c"]
    from_a = [e for e in _stored_events(d) if e["origin"] == "node-a"]
    assert from_a and all(verifies(key_a["public_key"], e) for e in from_a)
    assert sorted(e["origin_seq"] for e in from_a) == sorted(e["seq"] for e in events(a))


def test_a_truncated_audit_log_on_a_is_reported_by_its_witness_b(make_stack, tmp_path) -> None:
    a = make_node(make_stack, tmp_path, "node-a", ["node-b"])
    b = make_node(make_stack, tmp_path, "node-b", ["node-a"])
    link(b, a)
    link(a, b)  # A asks B what it holds with the token B made for it
    for n in range(4):  # audit records on A: key changes are in the chain
        a.aurora("keys", "create", f"k{n}", "--role", "viewer")
    published = json.loads(a.aurora("federation", "witness", "publish").stdout)
    assert published["count"] >= 5 and published["anchor"] is None
    assert "unchanged" in a.aurora("federation", "witness", "publish").stdout
    sync(b)
    held = b.http("GET", "/federation/witness/node-a").json()
    assert held["checkpoint"]["data"]["head_hash"] == published["head_hash"] and held["problem"] is None
    a.aurora("keys", "create", "k-late", "--role", "viewer")
    assert json.loads(a.aurora("federation", "witness", "publish").stdout)["anchor"]["head_hash"] == published["head_hash"]
    sync(b)
    verified = a.aurora("audit", "verify", "--witnesses")
    assert "node-b holds the checkpoint" in verified.stdout and "intact" in verified.stdout

    # Someone with the database (and AURORA_HOME) cuts A's log short and removes A's own checkpoints.
    db = a.env["AURORA_DATABASE_URL"].removeprefix("sqlite:///")
    with sqlite3.connect(db) as conn:
        newest = conn.execute("SELECT max(pk) FROM audit_records").fetchone()[0]
        conn.execute("DELETE FROM audit_records WHERE pk > ?", (newest - 3,))
    (Path(a.env["AURORA_HOME"]) / "audit_checkpoints.jsonl").unlink()
    assert a.aurora("audit", "verify").returncode == 0  # the shorter chain alone looks intact
    caught = a.aurora("audit", "verify", "--witnesses", check=False)
    assert caught.returncode == 1 and "cut short" in caught.stderr, caught.stdout + caught.stderr

    assert json.loads(a.aurora("federation", "witness", "publish").stdout)["count"] == published["count"] + 1 - 3
    sync(b)
    held = b.http("GET", "/federation/witness/node-a").json()
    assert held["problem"].startswith("audit log of node-a cut short: "), held
    [report] = [e for e in events(b, origin="node-b") if e["type"] == "audit.witness_mismatch"]
    assert report["data"]["origin"] == "node-a" and report["data"]["seen"]["count"] < report["data"]["held"]["count"]
    health = b.http("GET", "/health", key="").json()
    federation = health["components"]["federation"]
    assert federation["ok"] is False and "node-a" in federation["witness_problems"]
    assert "no longer holds its checkpoint" in federation["error"]
    assert "PROBLEM" in b.aurora("federation", "witness", "list").stdout
    b.aurora("federation", "witness", "clear", "node-a")
    assert b.http("GET", "/health", key="").json()["components"]["federation"]["ok"] is True


def test_peer_tokens_are_encrypted_at_rest_and_query_tokens_are_deprecated(make_stack, tmp_path) -> None:
    a = make_node(make_stack, tmp_path, "node-a", ["node-b"])
    b = make_node(make_stack, tmp_path, "node-b", ["node-a"])
    token = link(b, a)
    submit(a, 1)
    db = b.env["AURORA_DATABASE_URL"].removeprefix("sqlite:///")

    def stored() -> str:
        with sqlite3.connect(db) as conn:
            return conn.execute("SELECT token FROM nodes WHERE name = 'node-a'").fetchone()[0]

    assert stored().startswith("fernet:") and token not in stored()
    key_file = Path(b.env["AURORA_HOME"]) / "federation_tokens.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert sync(b)[0]["pulled"] == len(events(a))
    # A token stored in plain text before this (an older Aurora) still works, and the upgrade seals it.
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE nodes SET token = ? WHERE name = 'node-a'", (token,))
    submit(a, 1)
    assert sync(b)[0]["pulled"] > 0
    upgraded = b.aurora("db", "upgrade")
    assert "encrypted 1 peer token" in upgraded.stdout and stored().startswith("fernet:")
    submit(a, 1)
    assert sync(b)[0]["pulled"] > 0

    by_query = requests.get(f"{a.url}/federation/events", params={"token": token}, timeout=5)
    assert by_query.status_code == 200 and by_query.headers["Deprecation"].startswith("@")
    by_header = requests.get(f"{a.url}/federation/events", headers={"Authorization": f"Bearer {token}"}, timeout=5)
    assert by_header.status_code == 200 and "Deprecation" not in by_header.headers
    logs = "".join(path.read_text(errors="replace") for path in a.logs.values() if path.exists())
    assert "/federation/events" in logs and token not in logs
    # the admin key is not a peer token: /federation/events answers peers only (README says so)
    assert requests.get(f"{a.url}/federation/events", headers={"Authorization": f"Bearer {a.keys['admin']}"},
                        timeout=5).status_code == 401


def test_signatures_survive_a_postgresql_relay(make_stack, tmp_path, postgres_url) -> None:
    # A (SQLite) -> B (PostgreSQL) -> C (SQLite): B stores A's events with A's signature in
    # PostgreSQL's JSON and serves them again; C verifies them under the key B introduced.
    a = make_node(make_stack, tmp_path, "node-a", ["node-b"])

    def on_postgres(**env: str):
        return make_stack(database_url=postgres_url, **env)

    b = make_node(on_postgres, tmp_path, "node-b", ["node-a", "node-c"])
    c = make_node(make_stack, tmp_path, "node-c", ["node-b"])
    link(b, a)
    link(c, b)
    submit(a, 2)
    a.aurora("federation", "witness", "publish")
    [first] = sync(b)
    assert first["pulled"] == len(events(a)), first
    [result] = sync(c)
    assert result["pulled"] == len(events(b)) and "rejected" not in result, result
    assert [e["id"] for e in events(c, origin="node-a")] == [e["id"] for e in events(a)]
    assert c.http("GET", "/federation/witness/node-a").json()["checkpoint"]["origin"] == "node-a"
