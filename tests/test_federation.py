"""Federation between real Aurora nodes on loopback, each with its own database and port."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests
from conftest import ROOT, free_port

CLI = str(Path(sys.executable).parent / "aurora")
MAIL = {"name": "mail", "goal": "send_email", "payload": {"to": "a@example.com", "subject": "s", "text": "t"}}


def make_node(make_stack, tmp_path, name: str, peers: list[str], worker: bool = False, page_size: int = 7,
              lease_seconds: float = 2):
    policy = json.loads((ROOT / "policy" / "batch8_policy.json").read_text())
    policy.update(federation_enabled=True, federation_nodes=peers)
    policy["federation"].update(page_size=page_size, max_pages=1000, lease_seconds=lease_seconds)
    policy_file = tmp_path / f"policy-{name}.json"
    policy_file.write_text(json.dumps(policy))
    node = make_stack(AURORA_NODE_NAME=name, AURORA_POLICY_FILE=str(policy_file))
    node.policy_file, node.policy = policy_file, policy
    node.port = free_port()
    node.aurora("db", "upgrade")
    node.keys["admin"] = node.aurora("keys", "create", "admin", "--role", "admin").stdout.strip()
    node.start("web", "serve", "--port", str(node.port), "--workers", "1")
    if worker:
        node.start("worker", "worker", "-c", "1")
    node.wait_healthy(workers=worker)
    return node


def link(puller, source) -> str:
    """``puller`` registers ``source`` with a token that ``source`` made for it."""
    name = puller.env["AURORA_NODE_NAME"]
    token = source.aurora("federation", "token", "create", name).stdout.strip()
    puller.aurora("nodes", "register", source.url, source.env["AURORA_NODE_NAME"], token)
    return token


def sync(node, *args: str) -> list[dict]:
    done = node.aurora("federation", "sync", *args, "--json", check=False)
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def events(node, origin: str | None = None) -> list[dict]:
    query = f"&origin={origin}" if origin else ""
    return node.http("GET", f"/events?limit=1000{query}").json()["events"]


def submit(node, count: int) -> list[str]:
    return [node.http("POST", "/workflows", json={**MAIL, "name": f"m{i}"}).json()["id"] for i in range(count)]


def test_two_nodes_register_both_ways_and_sync_exactly_once(make_stack, tmp_path) -> None:
    a = make_node(make_stack, tmp_path, "node-a", ["node-b"], worker=True)
    b = make_node(make_stack, tmp_path, "node-b", ["node-a"])
    token = a.aurora("federation", "token", "create", "node-b").stdout.strip()
    helper = subprocess.run([str(ROOT / "federation_helpers.sh"), "register", a.url, "node-a", token],
                            env={**b.env, "AURORA_CLI": CLI}, cwd=b.cwd, capture_output=True, text=True)
    assert helper.returncode == 0, helper.stderr
    listed = subprocess.run([str(ROOT / "federation_helpers.sh"), "list"], env={**b.env, "AURORA_CLI": CLI},
                            cwd=b.cwd, capture_output=True, text=True).stdout
    assert "node-a" in listed and token not in listed
    link(a, b)

    for run_id in submit(a, 5):
        a.wait_status(run_id, {"succeeded"})
    mine = events(a)
    [result] = sync(b)
    assert result["pulled"] == len(mine) and result["pages"] >= 2
    copied = events(b, origin="node-a")
    assert [(e["id"], e["type"]) for e in copied] == [(e["id"], e["type"]) for e in mine]
    assert [e["seq"] for e in copied] == sorted(e["seq"] for e in copied)
    assert sync(b)[0]["pulled"] == 0  # a second sync adds nothing
    assert sync(a)[0]["pulled"] == 0  # B holds only A's own events: none travel back

    nodes = b.http("GET", "/federation/nodes").json()["nodes"]
    assert nodes[0]["name"] == "node-a" and nodes[0]["state"] == "healthy" and nodes[0]["lag"] == 0
    assert nodes[0]["cursor"] == mine[-1]["seq"]
    assert token not in json.dumps(nodes) and "token" not in nodes[0]
    by_peer = requests.get(a.url + "/federation/nodes", headers={"Authorization": f"Bearer {token}"}, timeout=5)
    assert by_peer.status_code == 200
    health = a.http("GET", "/health", key="").json()
    assert health["node"] == "node-a" and health["last_event_seq"] == mine[-1]["seq"]


def test_three_nodes_carry_events_along_a_chain_and_never_back(make_stack, tmp_path) -> None:
    a = make_node(make_stack, tmp_path, "node-a", ["node-b", "node-c"])
    b = make_node(make_stack, tmp_path, "node-b", ["node-a", "node-c"])
    c = make_node(make_stack, tmp_path, "node-c", ["node-b", "node-a"])
    link(b, a)
    link(c, b)
    link(a, c)  # closes the ring: A pulls from C
    submit(a, 4)
    submit(b, 2)
    sync(b)
    sync(c)
    from_a = [e["id"] for e in events(a)]
    assert [e["id"] for e in events(c, origin="node-a")] == from_a
    assert len(events(c, origin="node-b")) == len(events(b, origin="node-b"))
    [back] = sync(a)
    assert back["pulled"] == len(events(b, origin="node-b"))  # B's events reach A through C
    assert [e["id"] for e in events(a, origin="node-a")] == from_a  # and A's own never come back
    sync(b)
    sync(c)
    ids = [e["id"] for e in events(c)]
    assert len(ids) == len(set(ids))


def test_a_sync_killed_midway_resumes_without_loss_or_duplicates(make_stack, tmp_path) -> None:
    # The lease outlives the start of the next CLI process (a few seconds on a loaded machine),
    # so that the second sync below reliably finds it held.
    a = make_node(make_stack, tmp_path, "node-a", ["node-b"], page_size=3)
    b = make_node(make_stack, tmp_path, "node-b", ["node-a"], page_size=3, lease_seconds=15)
    link(b, a)
    submit(a, 300)
    proc = subprocess.Popen([sys.executable, "-m", "aurora", "federation", "sync", "node-a"], env=b.env, cwd=b.cwd,
                            stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if "page 3," in line:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait()
    partial = events(b, origin="node-a")
    assert 0 < len(partial) < 300
    # The killed process still holds the peer's lease until it lapses (lease_seconds: 15 here).
    killed_at = time.monotonic()
    assert sync(b, "node-a")[0]["skipped"].startswith("another sync holds")
    time.sleep(max(0.0, 15.5 - (time.monotonic() - killed_at)))
    sync(b, "node-a")
    copied = [e["id"] for e in events(b, origin="node-a")]
    assert copied == [e["id"] for e in events(a)] and len(copied) == 300


def test_tokens_wrong_revoked_rotated_and_the_policy_switch(make_stack, tmp_path) -> None:
    a = make_node(make_stack, tmp_path, "node-a", ["node-b"])
    b = make_node(make_stack, tmp_path, "node-b", ["node-a"])
    first = link(b, a)
    submit(a, 2)

    def pull(token: str, via_query: bool = False) -> requests.Response:
        if via_query:
            return requests.get(f"{a.url}/federation/events", params={"token": token}, timeout=5)
        return requests.get(f"{a.url}/federation/events", headers={"Authorization": f"Bearer {token}"}, timeout=5)

    assert pull(first).status_code == 200 and pull(first, via_query=True).status_code == 200
    wrong = pull("aurfed_not-a-real-token")
    assert wrong.status_code == 401 and wrong.json()["error"] == "unauthorized"
    second = a.aurora("federation", "token", "create", "node-b").stdout.strip()
    assert pull(first).status_code == 200 and pull(second).status_code == 200  # both valid while rotating
    third = a.aurora("federation", "token", "create", "node-b", check=False)
    assert third.returncode == 2 and "revoke one first" in third.stderr
    first_id = a.aurora("federation", "token", "list").stdout.splitlines()[1].split()[0]  # below the header
    a.aurora("federation", "token", "revoke", first_id)
    assert pull(first).status_code == 401 and pull(second).status_code == 200

    [failed] = sync(b)
    assert failed["error"].startswith("HTTP 401")
    node = b.http("GET", "/federation/nodes").json()["nodes"][0]
    assert node["failures"] == 1 and node["next_attempt_at"] and first not in json.dumps(node)
    assert sync(b)[0].get("skipped", "").startswith("another sync holds")  # beat's pass respects the backoff
    b.aurora("nodes", "register", a.url, "node-a", second)
    assert sync(b, "node-a")[0]["pulled"] == len(events(a))

    a.policy["federation_nodes"] = []
    a.policy_file.write_text(json.dumps(a.policy))
    time.sleep(1.5)
    refused = pull(second)
    assert refused.status_code == 403 and "federation_nodes" in refused.json()["message"]
    a.policy.update(federation_enabled=False, federation_nodes=["node-b"])
    a.policy_file.write_text(json.dumps(a.policy))
    time.sleep(1.5)
    disabled = pull(second)
    assert disabled.status_code == 403 and "federation is disabled" in disabled.json()["message"]
    assert "node-a" in b.aurora("nodes", "list").stdout
    b.aurora("nodes", "remove", "node-a")
    assert "no nodes" in b.aurora("nodes", "list").stdout
