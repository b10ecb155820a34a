"""The API's contract: the OpenAPI document matches the real endpoints, and schemathesis fuzzes a
live app with an API key without a single 5xx or a response that breaks the document."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, free_port


def test_openapi_paths_are_exactly_the_app_routes(app) -> None:
    spec = app.test_client().get("/openapi.json").json
    assert spec["openapi"] == "3.1.0"
    documented = {(path, method.upper()) for path, item in spec["paths"].items() for method in item}
    routed = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith(("/ui", "/static")):
            continue  # the approval page is HTML for people, not the API
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        routed |= {(path, method) for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert documented == routed
    page = app.test_client().get("/docs")
    assert page.status_code == 200 and "/workflows/{run_id}/approve" in page.get_data(as_text=True)


def test_schemathesis_finds_no_server_error_and_no_schema_break(make_stack, tmp_path) -> None:
    secrets = tmp_path / "secrets.json"
    secrets.write_text(json.dumps({"stripe": {"webhook_secret": "whsec_fuzz"}, "typeform": {"webhook_secret": "tf"},
                                   "mailgun": {"webhook_signing_key": "mg"}}))
    secrets.chmod(0o600)
    stack = make_stack(AURORA_SECRETS_FILE=str(secrets))
    stack.port = free_port()
    stack.aurora("db", "upgrade")
    key = stack.aurora("keys", "create", "fuzzer", "--role", "admin").stdout.strip()
    stack.start("web", "serve", "--port", str(stack.port), "--workers", "2")
    stack.start("worker", "worker", "-c", "1")
    stack.wait_healthy()
    binary = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    done = subprocess.run(
        [binary, "run", f"{stack.url}/openapi.json", "-H", f"Authorization: Bearer {key}",
         "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
         # One worker: CPython 3.11 can fail building ASTs in several threads at once ("AST
         # constructor recursion depth mismatch"), which schemathesis would report as its own error.
         "--max-examples", "15", "--workers", "1", "--seed", "20261125", "--no-color"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)  # its cache stays out of the checkout
    assert done.returncode == 0, done.stdout[-6000:]
    assert re.search(r"\d+ generated, \d+ passed", done.stdout)
    assert "5xx" not in stack.log("web") and "Traceback" not in stack.log("web")


def test_the_workflow_schema_is_served_with_an_id_that_resolves_to_it(client) -> None:
    from aurora import documents
    from aurora.resources import load_schema

    served = client.get("/schemas/workflow.json", base_url="http://aurora.example:8080")
    assert served.status_code == 200 and served.mimetype == "application/schema+json"
    schema = served.get_json(force=True)
    assert schema["$id"] == "http://aurora.example:8080/schemas/workflow.json"  # the URL it came from
    assert list(schema)[:2] == ["$schema", "$id"]
    again = client.get(schema["$id"].removeprefix("http://aurora.example:8080"), base_url="http://aurora.example:8080")
    assert again.get_json(force=True) == schema
    shipped = load_schema("workflow.schema.json")
    assert {**shipped, "$id": schema["$id"]} == schema
    assert shipped["$id"] == "http://127.0.0.1:9292/schemas/workflow.json"  # the default stack's own address

    # Each example carries the editor's modeline, pointing at the schema in this checkout, and still loads.
    for path in sorted((ROOT / "workflows").glob("*.yaml")):
        first = path.read_text().splitlines()[0]
        assert first == "# yaml-language-server: $schema=../schemas/workflow.schema.json", path
        assert json.loads((path.parent / first.split("=", 1)[1]).read_text()) == shipped
        declared = documents.parse(path.read_bytes()).get("inputs") or {}
        documents.load(path.read_bytes(), inputs={"customer_email": "kunde@example.com"}
                       if "customer_email" in declared else None)
