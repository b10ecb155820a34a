"""Red-team findings on issues 15 and 20: each test failed on main before its fix."""

from __future__ import annotations

from conftest import shown
from test_people import bearer, waiting
from test_web_session import sign_in

from aurora import keys
from aurora.models import Role


def web_vote(client, run_id: str, request_hash: str, decision: str = "approve") -> str:
    page = client.get(f"/ui/runs/{run_id}").get_data(as_text=True)
    csrf = page.split('name="csrf_token" value="')[1].split('"')[0]
    answer = client.post(f"/ui/runs/{run_id}/{decision}", data={"csrf_token": csrf, "request_hash": request_hash},
                         follow_redirects=True)
    return answer.get_data(as_text=True)


def test_a_second_key_of_one_person_cannot_vote_again_on_the_web_page(client, app, runtime, api_keys) -> None:
    phone = keys.create(runtime.db, "alice-phone", Role.APPROVER, person="alice")
    run_id = waiting(client, runtime, api_keys.submitter)
    first = client.post(f"/workflows/{run_id}/approve", json={"request_hash": shown(runtime, run_id)},
                        headers=bearer(api_keys.approver))
    assert first.status_code == 200 and first.json["gate"]["received"] == 1
    browser = app.test_client()
    assert sign_in(browser, phone).status_code == 302
    web_vote(browser, run_id, shown(runtime, run_id))
    run = client.get(f"/workflows/{run_id}", headers=bearer(api_keys.admin)).json
    assert run["status"] == "awaiting_approval" and run["approvals"]["approvers"] == ["alice"]


def test_no_key_of_the_submitters_person_may_approve_on_the_web_page(client, app, runtime, api_keys) -> None:
    boss = keys.create(runtime.db, "boss", Role.ADMIN)
    laptop = keys.create(runtime.db, "boss-laptop", Role.ADMIN, person="boss")
    run_id = waiting(client, runtime, boss)
    browser = app.test_client()
    assert sign_in(browser, laptop).status_code == 302
    web_vote(browser, run_id, shown(runtime, run_id))
    run = client.get(f"/workflows/{run_id}", headers=bearer(api_keys.admin)).json
    assert run["approvals"]["received"] == 0 and run["approvals"]["votes"] == []
