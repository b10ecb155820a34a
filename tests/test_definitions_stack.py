"""Stored definitions through the real stack and the CLI: apply, history, run with inputs, a
signed webhook that starts a run, a replay that does not."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import requests
from conftest import ROOT, free_port
from standardwebhooks import Webhook


def test_apply_run_and_a_signed_webhook_through_the_cli_and_the_stack(make_stack) -> None:
    stack = make_stack()
    stack.port = free_port()
    stack.aurora("db", "upgrade")
    for name, role in (("admin", "admin"), ("sam", "submitter")):
        stack.keys[name] = stack.aurora("keys", "create", name, "--role", role).stdout.strip()
    stack.start("web", "serve", "--port", str(stack.port), "--workers", "1")
    stack.start("worker", "worker", "-c", "1")
    stack.wait_healthy()
    admin = {**stack.env, "AURORA_URL": stack.url, "AURORA_TOKEN": stack.keys["admin"]}
    sam = {**stack.env, "AURORA_URL": stack.url, "AURORA_TOKEN": stack.keys["sam"]}
    files = [str(ROOT / "definitions" / "invoice_mail.yaml"), str(ROOT / "definitions" / "autumn_post.yaml")]
    assert "version 1" in stack.aurora("workflows", "apply", *files, env=admin).stdout
    assert "unchanged" in stack.aurora("workflows", "apply", files[0], env=admin).stdout
    listed = stack.aurora("workflows", "list", env=admin).stdout
    assert "autumn_post" in listed and "schedule" in listed and "2026-" in listed  # the next Monday
    refused = stack.aurora("workflows", "apply", files[0], env=sam, check=False)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr

    started = json.loads(stack.aurora("run", "invoice_mail", "--input", "customer_email=k@example.com",
                                      "--input", "invoice=R-1", env=sam).stdout)
    run = stack.wait_status(started["id"], {"succeeded", "failed"})
    assert run["status"] == "succeeded"
    assert any(e["type"] == "run.triggered" for e in run["timeline"])

    secret = stack.aurora("workflows", "secret", "invoice_mail", env=admin).stdout.strip()
    body = json.dumps({"customer": {"email": "kunde@example.com"}, "invoice": {"number": "R-2"}})
    now = datetime.now(UTC)
    headers = {"webhook-id": "msg_stack_1", "webhook-timestamp": str(int(now.timestamp())),
               "webhook-signature": Webhook(secret).sign("msg_stack_1", now, body), "Content-Type": "application/json"}
    hooked = requests.post(f"{stack.url}/hooks/invoice_mail", data=body, headers=headers, timeout=10)
    assert hooked.status_code == 201, hooked.text
    run = stack.wait_status(hooked.json()["id"], {"succeeded", "failed"})
    assert run["status"] == "succeeded" and run["flow"]["inputs"]["invoice"] == "R-2"
    assert requests.post(f"{stack.url}/hooks/invoice_mail", data=body, headers=headers, timeout=10).status_code == 409
    assert "version 1" in stack.aurora("workflows", "history", "invoice_mail", env=admin).stdout

    from playwright.sync_api import sync_playwright
    from test_web_ui import ARGS, CHROMIUM

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = chromium.new_context().new_page()
        page.goto(stack.url + "/ui/")
        page.fill("#key", stack.keys["admin"])
        page.click("button[type=submit]")
        page.goto(stack.url + "/ui/definitions")
        weekly = page.locator("tr[data-definition=autumn_post]").inner_text()
        assert "schedule" in weekly and "2026" in weekly  # its next Monday 09:00
        hooked = page.locator("tr[data-definition=invoice_mail]").inner_text()
        assert "webhook" in hooked and "succeeded" in hooked  # its last runs
        chromium.close()
