"""The red team of issue 16 (federation you can trust): each test is a break found by a hostile
peer, a hostile relay or a fault, that failed before its fix. The hostile peers are fakes on
loopback speaking the documented wire format and signing with their own keys
(test_federation_bounds' ``evil``); the node is Aurora's real runtime and web app."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fakes import HostilePeer
from test_federation_bounds import DEADLINE, EVIL_PUBLIC, PAGE, TOKEN, event, page, sync

from aurora.federation import registry


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
