"""``Idempotency-Key`` on ``POST /workflows``: a retried submission makes no second run."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from aurora import idempotency, keys
from aurora.models import IdempotencyKey, Role, Run, utcnow
from aurora.runtime import set_runtime

MAIL = "name: send_report\ngoal: send_email\npayload: {to: kunde@example.com, subject: Hi, template: monthly}\n"
OTHER = MAIL.replace("Hi", "Hallo")
YAML = {"Content-Type": "application/yaml"}


def runs(runtime) -> int:
    with runtime.db.read() as session:
        return session.scalar(select(func.count()).select_from(Run))


def post(client, api_keys, key: str | None, body: str = MAIL, role: str = "submitter", **headers: str):
    extra = {"Idempotency-Key": key} if key is not None else {}
    return client.post("/workflows", data=body, headers={**YAML, **api_keys.header(role), **extra, **headers})


def test_the_same_key_and_body_answer_the_same_run_with_200(client, api_keys, runtime) -> None:
    first = post(client, api_keys, "8e03978e-40d5-43e8-bc93-6894a57f9324")
    assert first.status_code == 201, first.json
    second = post(client, api_keys, "8e03978e-40d5-43e8-bc93-6894a57f9324")
    assert second.status_code == 200, second.json
    assert second.json["id"] == first.json["id"] and second.headers["Location"] == first.headers["Location"]
    assert set(second.json) == set(first.json) - {"warning"}
    assert second.headers["Idempotent-Replayed"] == "true"
    # The draft's structured-field form ("...") is the same key as the bare one.
    quoted = post(client, api_keys, '"8e03978e-40d5-43e8-bc93-6894a57f9324"')
    assert quoted.status_code == 200 and quoted.json["id"] == first.json["id"]
    # The same document in another format is the same request; without a key, a new run each time.
    as_json = json.dumps({"name": "send_report", "goal": "send_email",
                          "payload": {"to": "kunde@example.com", "subject": "Hi", "template": "monthly"}})
    replay = post(client, api_keys, "8e03978e-40d5-43e8-bc93-6894a57f9324", body=as_json,
                  **{"Content-Type": "application/json"})
    assert replay.status_code == 200 and replay.json["id"] == first.json["id"]
    assert post(client, api_keys, None).status_code == 201
    assert runs(runtime) == 2


def test_the_same_key_with_another_body_is_422_and_stores_nothing(client, api_keys, runtime) -> None:
    assert post(client, api_keys, "k-1").status_code == 201
    response = post(client, api_keys, "k-1", body=OTHER)
    assert response.status_code == 422
    assert response.json["error"] == "idempotency_key_reused" and "Idempotency-Key" in response.json["message"]
    assert runs(runtime) == 1


def test_keys_belong_to_their_owner(client, api_keys, runtime) -> None:
    mine = post(client, api_keys, "shared-key")
    theirs = post(client, api_keys, "shared-key", role="other_submitter", body=OTHER)
    assert mine.status_code == theirs.status_code == 201
    assert mine.json["id"] != theirs.json["id"] and theirs.json["submitted_by"] == "sue"


@pytest.mark.parametrize("bad", ["", '""', "x" * 256, "schlüssel", "tab\there", 'a"b'])
def test_a_bad_key_is_a_400_naming_the_header(client, api_keys, runtime, bad: str) -> None:
    response = client.post("/workflows", data=MAIL,
                           headers=[("Content-Type", "application/yaml"),
                                    ("Authorization", api_keys.header("submitter")["Authorization"]),
                                    ("Idempotency-Key", bad.encode("utf-8").decode("latin-1"))])
    assert response.status_code == 400, response.json
    assert response.json["error"] == "invalid_idempotency_key" and "Idempotency-Key" in response.json["message"]
    assert runs(runtime) == 0
    assert post(client, api_keys, "x" * 255).status_code == 201  # the longest allowed


def test_a_key_is_kept_24_hours_then_forgotten(client, api_keys, runtime) -> None:
    first = post(client, api_keys, "old-key")
    with runtime.db.write() as session:
        session.execute(update(IdempotencyKey).values(created_at=utcnow() - timedelta(hours=23, minutes=59)))
    assert post(client, api_keys, "old-key").json["id"] == first.json["id"]
    with runtime.db.write() as session:
        session.execute(update(IdempotencyKey).values(created_at=utcnow() - timedelta(hours=24, seconds=1)))
    later = post(client, api_keys, "old-key", body=OTHER)  # past its retention the key is free again
    assert later.status_code == 201 and later.json["id"] != first.json["id"]
    post(client, api_keys, "another")
    with runtime.db.write() as session:
        session.execute(update(IdempotencyKey).where(IdempotencyKey.key == "another")
                        .values(created_at=utcnow() - timedelta(days=2)))
    with runtime.db.write_rows() as connection:
        assert idempotency.prune(connection, utcnow()) == 1
    with runtime.db.read() as session:
        assert session.scalars(select(IdempotencyKey.key)).all() == ["old-key"]


@pytest.fixture
def any_runtime(each_db):
    set_runtime(each_db)
    yield each_db
    set_runtime(None)


def test_concurrent_identical_requests_make_one_run(any_runtime) -> None:
    from aurora.web import create_app

    app = create_app({"TESTING": True})
    key = keys.create(any_runtime.db, "sam", Role.SUBMITTER)
    threads, start = 8, threading.Barrier(8)
    answers: list[tuple[int, str]] = []

    def send() -> None:
        client = app.test_client()
        start.wait()
        response = client.post("/workflows", data=MAIL, headers={
            **YAML, "Authorization": f"Bearer {key}", "Idempotency-Key": "race-1"})
        answers.append((response.status_code, response.json.get("id") or response.json["error"]))

    workers = [threading.Thread(target=send) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    assert len(answers) == threads
    assert sorted(status for status, _ in answers) == [200] * (threads - 1) + [201], answers
    assert len({run_id for _, run_id in answers}) == 1
    assert runs(any_runtime) == 1


def test_identical_requests_racing_through_gunicorn_on_postgresql_make_one_run(make_stack, postgres_url) -> None:
    from concurrent.futures import ThreadPoolExecutor

    import requests
    from conftest import free_port

    stack = make_stack(database_url=postgres_url)
    stack.port = free_port()
    stack.aurora("db", "upgrade")
    key = stack.aurora("keys", "create", "sam", "--role", "submitter").stdout.strip()
    stack.start("web", "serve", "--port", str(stack.port), "--workers", "2")
    stack.wait_healthy(workers=False)
    start = threading.Barrier(12)

    def send(_: int) -> tuple[int, str]:
        start.wait()
        response = requests.post(stack.url + "/workflows", data=MAIL, timeout=30, headers={
            **YAML, "Authorization": f"Bearer {key}", "Idempotency-Key": "gunicorn-race"})
        return response.status_code, response.json().get("id", response.text)

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(send, range(12)))
    assert sorted(status for status, _ in answers) == [200] * 11 + [201], answers
    assert len({run_id for _, run_id in answers}) == 1
    listed = requests.get(stack.url + "/workflows", headers={"Authorization": f"Bearer {key}"}, timeout=10).json()
    assert len(listed["runs"]) == 1
