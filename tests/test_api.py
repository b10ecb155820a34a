"""The HTTP API in-process: auth, every kind of bad input, listing, cancel. Nothing half-stored."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from aurora.models import Event, Run

MAIL = "name: send_report\ngoal: send_email\npayload: {to: kunde@example.com, subject: Hi, template: monthly}\n"
YAML = {"Content-Type": "application/yaml"}
CHARGE = 'name: pay\ngoal: charge\npayload: {customer: cus_1, amount: "9.99", currency: EUR}\n'


def stored(runtime) -> tuple[int, int]:
    with runtime.db.read() as session:
        return (session.scalar(select(func.count()).select_from(Run)),
                session.scalar(select(func.count()).select_from(Event)))


def submit(client, api_keys, body=MAIL, role="submitter", headers=YAML):
    return client.post("/workflows", data=body, headers={**headers, **api_keys.header(role)})


def test_submit_yaml_json_and_multipart(client, api_keys, runtime) -> None:
    created = submit(client, api_keys)
    assert created.status_code == 201, created.json
    assert created.json["status"] == "queued" and created.headers["Location"] == f"/workflows/{created.json['id']}"
    as_json = json.dumps({"name": "j", "goal": "analyse", "payload": {"text": "Hallo"}})
    assert submit(client, api_keys, as_json, headers={"Content-Type": "application/json"}).status_code == 201
    from io import BytesIO

    upload = client.post("/workflows", data={"file": (BytesIO(MAIL.encode()), "send_report.yaml")},
                         headers=api_keys.header("submitter"), content_type="multipart/form-data")
    assert upload.status_code == 201
    assert stored(runtime)[0] == 3
    queued = list((runtime.settings.broker_folder / "queue").iterdir())
    assert len(queued) == 3  # one message per run, carrying only its id
    message = json.loads(queued[0].read_text())
    assert json.loads(__import__("base64").b64decode(message["body"]))[0][0] in {
        r["id"] for r in client.get("/workflows", headers=api_keys.header("viewer")).json["runs"]}


@pytest.mark.parametrize("body, headers, status, code, path", [
    (MAIL.replace("kunde@example.com", "x"), YAML, 422, "invalid_workflow", "payload.to"),
    ("name: a\ngoal: fly\npayload: {}\n", YAML, 422, "invalid_workflow", "goal"),
    ("a: &x 1\nb: *x\n", YAML, 400, "malformed_workflow", ""),
    ("name: [oops\n", YAML, 400, "malformed_workflow", ""),
    (b"name: \xff\n", YAML, 400, "malformed_workflow", ""),
    ("{not json", {"Content-Type": "application/json"}, 400, "malformed_workflow", ""),
    # an integer past Python's 4,300-digit limit was a 500
    ('{"name": "j", "goal": "analyse", "payload": {"text": "a", "n": %s}}' % ("9" * 4301),
     {"Content-Type": "application/json"}, 400, "malformed_workflow", ""),
    ("name: j\ngoal: analyse\npayload: {text: a, n: %s}\n" % ("9" * 4301), YAML, 400, "malformed_workflow", ""),
    (CHARGE.replace('amount: "9.99"', "amount: 0x" + "f" * 4000), YAML, 400, "malformed_workflow", "payload.amount"),
    # a trailing newline passed every pattern ending in $
    (CHARGE.replace("cus_1", '"cus_1\\n"'), YAML, 422, "invalid_workflow", "payload.customer"),
    (MAIL.replace("kunde@example.com", '"kunde@example.com\\n"'), YAML, 422, "invalid_workflow", "payload.to"),
    # CR/LF in a mail header reached the provider
    (MAIL.replace("subject: Hi", 'subject: "Hi\\r\\nBcc: all@example.com"'), YAML, 422, "invalid_workflow",
     "payload.subject"),
    (MAIL.replace("subject: Hi", 'subject: "Hi\\n"'), YAML, 422, "invalid_workflow", "payload.subject"),
    # ... and in every other header field: the sender and the reply address, too
    (MAIL.replace("subject: Hi", 'subject: Hi, from: "Laden <a@example.com>\\r\\nBcc: all@example.com"'), YAML,
     422, "invalid_workflow", "payload.from"),
    (MAIL.replace("subject: Hi", 'subject: Hi, reply_to: "a@example.com\\nBcc: all@example.com"'), YAML, 422,
     "invalid_workflow", "payload.reply_to"),
    (MAIL.replace("kunde@example.com", '"kunde@example.com\\rBcc: all@example.com"'), YAML, 422,
     "invalid_workflow", "payload.to"),
    # a control character in the address's local part (NUL ends a C string at the provider)
    (MAIL.replace("kunde@example.com", '"kunde\\0@example.com"'), YAML, 422, "invalid_workflow", "payload.to"),
    # no ceiling on a charge: the default is 10000 per currency
    (CHARGE.replace('"9.99"', '"10000.01"'), YAML, 422, "invalid_workflow", "payload.amount"),
    (MAIL, {"Content-Type": "application/xml"}, 415, "unsupported_media_type", None),
    (MAIL, {}, 415, "unsupported_media_type", None),
])
def test_bad_input_is_a_clear_4xx_and_stores_nothing(client, api_keys, runtime, body, headers, status, code, path):
    before = stored(runtime)
    response = submit(client, api_keys, body, headers=headers)
    assert response.status_code == status
    assert response.is_json and response.json["error"] == code and response.json["message"]
    if path is not None:
        assert [e["path"] for e in response.json["errors"]][0] == path
    assert stored(runtime) == before


def test_the_charge_ceiling_is_the_policys(client, api_keys, runtime) -> None:
    from pathlib import Path

    policy_file = Path(runtime.settings.policy_file)
    policy = json.loads(policy_file.read_text())
    policy["adapters"]["stripe"]["max_amount"] = {"EUR": "50", "*": "20000"}
    policy_file.write_text(json.dumps(policy))
    runtime.policies._check()  # the watcher would see it within a second
    over = submit(client, api_keys, CHARGE.replace('"9.99"', '"50.01"'))
    assert over.status_code == 422 and "ceiling of 50 EUR" in over.json["message"]
    assert submit(client, api_keys, CHARGE.replace('"9.99"', '"50.00"')).status_code == 201
    assert submit(client, api_keys, CHARGE.replace('"9.99"', '"15000"').replace("EUR", "USD")).status_code == 201
    policy["adapters"]["stripe"]["max_amount"] = {"EUR": "50\n"}
    policy_file.write_text(json.dumps(policy))
    runtime.policies._check()
    assert runtime.policies.last_error and "max_amount" in runtime.policies.last_error


def test_oversized_body_is_413_json(client, api_keys, runtime) -> None:
    big = MAIL + "# " + "x" * (runtime.settings.max_document_bytes + 100) + "\n"
    response = submit(client, api_keys, big)
    assert response.status_code == 413 and response.json["error"] == "workflow_too_large"
    huge = "x" * (runtime.settings.max_document_bytes + 100_000)
    response = submit(client, api_keys, huge)
    assert response.status_code == 413 and response.is_json
    assert stored(runtime) == (0, 0)


def test_auth_401_and_403_are_distinct_json(client, api_keys) -> None:
    assert client.get("/workflows").status_code == 401
    bad = client.get("/workflows", headers={"Authorization": "Bearer aur_nope_nope"})
    assert bad.status_code == 401 and bad.json["error"] == "unauthorized"
    assert bad.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/workflows", headers={"Authorization": "Basic abc"}).status_code == 401
    denied = submit(client, api_keys, role="viewer")
    assert denied.status_code == 403 and denied.json["error"] == "forbidden"
    assert submit(client, api_keys, role="approver").status_code == 403
    assert submit(client, api_keys, role="admin").status_code == 201


def test_revoked_keys_stop_working(client, api_keys, runtime) -> None:
    from aurora import keys

    keys.revoke(runtime.db, "vic")
    assert client.get("/workflows", headers=api_keys.header("viewer")).status_code == 401


def test_show_list_filter_and_paginate(client, api_keys) -> None:
    ids = [submit(client, api_keys, MAIL.replace("send_report", f"r{i}")).json["id"] for i in range(5)]
    viewer = api_keys.header("viewer")
    page = client.get("/workflows?limit=2", headers=viewer).json
    assert [r["id"] for r in page["runs"]] == ids[::-1][:2]
    seen = [r["id"] for r in page["runs"]]
    while page["next_cursor"]:
        page = client.get(f"/workflows?limit=2&cursor={page['next_cursor']}", headers=viewer).json
        seen += [r["id"] for r in page["runs"]]
    assert seen == ids[::-1]
    assert [r["name"] for r in client.get("/workflows?name=r3", headers=viewer).json["runs"]] == ["r3"]
    assert len(client.get("/workflows?status=queued&goal=send_email", headers=viewer).json["runs"]) == 5
    assert client.get("/workflows?status=running", headers=viewer).json["runs"] == []
    detail = client.get(f"/workflows/{ids[0]}", headers=viewer).json
    assert detail["document"]["payload"]["to"] == "kunde@example.com"
    assert [e["type"] for e in detail["timeline"]] == ["run.queued"]
    assert detail["timeline"][0]["origin"] == "test-node"


@pytest.mark.parametrize("query, fragment", [
    ("status=bogus", "status"), ("goal=fly", "goal"), ("limit=0", "limit"), ("limit=abc", "limit"),
    ("cursor=!!!", "cursor"),
])
def test_bad_query_parameters_are_400(client, api_keys, query, fragment) -> None:
    response = client.get(f"/workflows?{query}", headers=api_keys.header("viewer"))
    assert response.status_code == 400 and fragment in response.json["message"]


def test_unknown_run_and_route_are_json_404(client, api_keys) -> None:
    missing = client.get("/workflows/nope", headers=api_keys.header("viewer"))
    assert missing.status_code == 404 and missing.json["error"] == "not_found"
    assert client.get("/nowhere").json["error"] == "not_found"
    wrong = client.delete("/workflows", headers=api_keys.header("admin"))
    assert wrong.status_code == 405 and wrong.is_json


def test_cancel_by_submitter_or_admin_only(client, api_keys) -> None:
    run_id = submit(client, api_keys).json["id"]
    other = client.post(f"/workflows/{run_id}/cancel", headers=api_keys.header("other_submitter"))
    assert other.status_code == 403
    ok = client.post(f"/workflows/{run_id}/cancel", headers=api_keys.header("submitter"))
    assert ok.status_code == 200 and ok.json["status"] == "cancelled"
    again = client.post(f"/workflows/{run_id}/cancel", headers=api_keys.header("admin"))
    assert again.status_code == 200 and again.json["status"] == "cancelled"
    assert client.get(f"/workflows/{run_id}", headers=api_keys.header("viewer")).json["status"] == "cancelled"


def test_health_needs_no_key_and_reports_components(client) -> None:
    body = client.get("/health").json
    assert body["node"] == "test-node" and body["version"]
    assert body["components"]["database"]["ok"] is True
    assert body["components"]["workers"]["ok"] is False  # no worker in this test
    assert body["status"] == "degraded"


def test_route_endpoint(client, api_keys) -> None:
    viewer = api_keys.header("viewer")
    decision = client.post("/route", json={"text": "Recherchiere aktuelle Studien zu PBM"}, headers=viewer).json
    assert decision["target"] == "perplexity" and decision["text_preview"].startswith("Recherchiere")
    assert client.post("/route", json={"text": ""}, headers=viewer).status_code == 422
    assert client.post("/route", data="x", headers=viewer).status_code == 422
    assert client.post("/route", json={"text": "x"}).status_code == 401
    rules = client.get("/route/rules", headers=viewer).json
    assert {r["engine"] for r in rules["rules"]} == {"perplexity", "claude", "gpt5_genius"}


def test_events_endpoint_pages_by_seq(client, api_keys) -> None:
    for _ in range(3):
        submit(client, api_keys)
    viewer = api_keys.header("viewer")
    first = client.get("/events?limit=2", headers=viewer).json
    assert len(first["events"]) == 2 and first["has_more"]
    rest = client.get(f"/events?since={first['last_seq']}", headers=viewer).json
    assert [e["seq"] for e in first["events"] + rest["events"]] == sorted(
        e["seq"] for e in first["events"] + rest["events"])
    assert len(rest["events"]) == 1


FLOW = """name: research_report
inputs:
  customer_email: {type: string, format: email}
  topic: {default: Hufrehe}
steps:
  - {id: research, goal: analyse, payload: {text: "{{ inputs.topic }}"}}
  - id: report
    goal: send_email
    needs: [research]
    payload: {to: "{{ inputs.customer_email }}", subject: Bericht, text: "{{ steps.research.output.text }}"}
"""


def test_a_workflow_of_steps_takes_its_inputs_beside_the_document(client, api_keys, runtime) -> None:
    from aurora.models import RunStatus

    json_type = {"Content-Type": "application/json"}
    created = submit(client, api_keys, json.dumps({"document": FLOW, "inputs": {"customer_email": "k@example.com"}}),
                     headers=json_type)
    assert created.status_code == 201, created.json
    assert created.json["goal"] == "workflow" and created.json["status"] == RunStatus.RUNNING.value
    detail = client.get(f"/workflows/{created.json['id']}", headers=api_keys.header("viewer")).json
    assert detail["flow"]["inputs"] == {"customer_email": "k@example.com", "topic": "Hufrehe"}
    assert [s["id"] for s in detail["flow"]["steps"]] == ["research", "report"]
    assert detail["flow"]["steps"][1]["needs"] == ["research"]

    before = stored(runtime)
    missing = submit(client, api_keys, json.dumps({"document": FLOW}), headers=json_type)
    assert missing.status_code == 422 and missing.json["errors"][0]["path"] == "inputs.customer_email"
    wrong = submit(client, api_keys, json.dumps({"document": FLOW, "inputs": {"customer_email": "k@example.com",
                                                                           "colour": "red"}}), headers=json_type)
    assert wrong.status_code == 422 and wrong.json["errors"][0]["path"] == "inputs.colour"
    extra = submit(client, api_keys, json.dumps({"document": FLOW, "inputz": {}}), headers=json_type)
    assert extra.status_code == 400 and extra.json["errors"][0]["path"] == "inputz"
    bad_inputs = submit(client, api_keys, json.dumps({"document": FLOW, "inputs": [1]}), headers=json_type)
    assert bad_inputs.status_code == 400
    assert stored(runtime) == before  # nothing half-stored

    from io import BytesIO

    upload = client.post("/workflows", data={"file": (BytesIO(FLOW.encode()), "flow.yaml"),
                                             "inputs": json.dumps({"customer_email": "m@example.com"})},
                         headers=api_keys.header("submitter"), content_type="multipart/form-data")
    assert upload.status_code == 201, upload.json


def test_rerun_refuses_what_is_not_a_finished_workflow(client, api_keys) -> None:
    task = submit(client, api_keys).json["id"]
    refused = client.post(f"/workflows/{task}/rerun", headers=api_keys.header("submitter"))
    assert refused.status_code == 409 and "only a workflow" in refused.json["message"]
    running = submit(client, api_keys, json.dumps({"document": FLOW, "inputs": {"customer_email": "k@example.com"}}),
                     headers={"Content-Type": "application/json"}).json["id"]
    assert client.post(f"/workflows/{running}/rerun", headers=api_keys.header("submitter")).status_code == 409
    assert client.post("/workflows/nope/rerun", headers=api_keys.header("submitter")).status_code == 404
