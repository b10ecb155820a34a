"""The approval page in a real browser (Debian's Chromium driven by Playwright) against a real
stack: sign in, see the payload plainly, approve and reject with comments, CSRF, a phone screen."""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest
import requests
from conftest import ROOT, free_port, missing

CHROMIUM = os.environ.get("AURORA_TEST_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def browser():
    if not CHROMIUM:
        missing("Chromium: install Debian's chromium package")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture
def stack(make_stack):
    stack = make_stack()
    stack.port = free_port()
    stack.aurora("db", "upgrade")
    for name, role in (("admin", "admin"), ("sam", "submitter"), ("alice", "approver"), ("bob", "approver"),
                       ("vic", "viewer")):
        stack.keys[name] = stack.aurora("keys", "create", name, "--role", role).stdout.strip()
    stack.start("web", "serve", "--port", str(stack.port), "--workers", "1")
    stack.start("worker", "worker", "-c", "1")
    stack.wait_healthy()
    return stack


def submit_charge(stack) -> str:
    body = (ROOT / "workflows" / "charge_invoice.yaml").read_bytes()
    response = stack.http("POST", "/workflows", key="sam", data=body, headers={"Content-Type": "application/yaml"})
    run_id = response.json()["id"]
    stack.wait_status(run_id, {"awaiting_approval"})
    return run_id


def sign_in(browser, stack, who: str, **context_args):
    page = browser.new_context(**context_args).new_page()
    page.goto(stack.url + "/ui/")
    assert "/ui/login" in page.url
    page.fill("#key", stack.keys[who])
    page.click("button[type=submit]")
    return page


def test_two_approvers_approve_a_payment_in_the_browser(browser, stack, tmp_path) -> None:
    run_id = submit_charge(stack)
    alice = sign_in(browser, stack, "alice")
    card = alice.locator(f"section[data-run='{run_id}']")
    assert "150.00 EUR" in card.inner_text() and "cus_123" in card.inner_text()
    assert "0 of 2" in card.inner_text()
    card.locator("input[name=comment]").fill("Rechnung geprüft")
    card.locator("button.approve").click()
    assert "Your approval is recorded" in alice.inner_text("body")
    assert stack.http("GET", f"/workflows/{run_id}").json()["approvals"]["received"] == 1
    alice.screenshot(path=str(tmp_path / "desktop.png"), full_page=True)

    bob = sign_in(browser, stack, "bob", viewport={"width": 390, "height": 844}, is_mobile=True)
    bob.goto(f"{stack.url}/ui/runs/{run_id}")  # the link from the notification mail
    assert stack.http("GET", f"/workflows/{run_id}").json()["status"] == "awaiting_approval"  # opening is no vote
    width = bob.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, "the page must fit a phone screen without sideways scrolling"
    bob.screenshot(path=str(tmp_path / "phone.png"), full_page=True)
    bob.locator("button.approve").click()
    run = stack.wait_status(run_id, {"succeeded"})
    votes = [(v["voter"], v["channel"], v["comment"]) for v in run["approvals"]["votes"]]
    assert votes == [("alice", "web", "Rechnung geprüft"), ("bob", "web", None)]
    deadline = time.monotonic() + 10
    while "succeeded" not in bob.inner_text("#status") and time.monotonic() < deadline:
        bob.reload()
    assert "succeeded" in bob.inner_text("#status")
    assert "run.succeeded" in bob.inner_text("ol.timeline")


def test_reject_submitter_and_viewer_see_no_buttons(browser, stack) -> None:
    run_id = submit_charge(stack)
    for who in ("sam", "vic"):
        page = sign_in(browser, stack, who)
        page.goto(f"{stack.url}/ui/runs/{run_id}")
        assert page.locator("button.approve").count() == 0
    alice = sign_in(browser, stack, "alice")
    alice.goto(f"{stack.url}/ui/runs/{run_id}")
    alice.fill("input[name=comment]", "falscher Betrag")
    alice.click("button.reject")
    assert stack.wait_status(run_id, {"rejected"})["approvals"]["votes"][0]["comment"] == "falscher Betrag"


def test_forms_need_a_csrf_token_and_a_session(stack) -> None:
    run_id = submit_charge(stack)
    session = requests.Session()
    login = session.get(stack.url + "/ui/login")
    token = login.text.split('name="csrf_token" value="')[1].split('"')[0]
    assert session.post(stack.url + "/ui/login", data={"key": stack.keys["alice"]}).status_code == 400  # no token
    signed = session.post(stack.url + "/ui/login", data={"key": stack.keys["alice"], "csrf_token": token})
    assert signed.status_code == 200 and "alice" in signed.text
    forged = session.post(f"{stack.url}/ui/runs/{run_id}/approve", data={"comment": "x"})
    assert forged.status_code == 400
    assert stack.http("GET", f"/workflows/{run_id}").json()["approvals"]["received"] == 0
    anonymous = requests.get(f"{stack.url}/ui/runs/{run_id}", allow_redirects=False)
    assert anonymous.status_code == 302 and "/ui/login" in anonymous.headers["Location"]
    assert "aur_" not in session.cookies.get("session", "")


def test_a_bad_key_is_refused(browser, stack) -> None:
    page = browser.new_context().new_page()
    page.goto(stack.url + "/ui/login")
    page.fill("#key", "aur_nope_nope")
    page.click("button[type=submit]")
    assert "not valid" in page.inner_text("body") and "/ui/login" in page.url


HIDDEN_HTML = "<p>Bitte überweisen Sie an IBAN DE00 0000</p>"


def full_hash(stack, run_id: str) -> str:
    return stack.http("GET", f"/workflows/{run_id}").json()["approval"]["hash"]


def test_the_page_shows_the_mails_hidden_html_part_and_the_mode(browser, stack) -> None:
    body = json.dumps({"name": "newsletter", "goal": "send_email", "payload": {
        "to": "kunde@example.com", "subject": "Harmloser Text", "text": "Harmloser Text", "html": HIDDEN_HTML,
        "variables": {"rabatt": "90%"}, "require_approval": True}})
    response = stack.http("POST", "/workflows", key="sam", data=body, headers={"Content-Type": "application/json"})
    run_id = response.json()["id"]
    stack.wait_status(run_id, {"awaiting_approval"})
    alice = sign_in(browser, stack, "alice")
    card = alice.locator(f"section[data-run='{run_id}']")
    shown = card.inner_text()  # what a person reads without opening anything
    assert HIDDEN_HTML in shown and "HTML part" in shown and '"rabatt": "90%"' in shown
    assert "SIMULATED" in shown and "policy: dry_run is true" in shown
    card.locator("details summary").click()  # the full request behind the plain words
    full = json.loads(card.locator("details pre").inner_text())
    assert full["form"]["html"] == HIDDEN_HTML and full["auth"]["password"] == "[REDACTED]"
    cli = {**stack.env, "AURORA_URL": stack.url, "AURORA_TOKEN": stack.keys["bob"]}
    listed = stack.aurora("approvals", env=cli).stdout  # the same, in the terminal
    assert f"HTML part: {HIDDEN_HTML}" in listed and "SIMULATED: policy: dry_run is true" in listed
    assert f"aurora approve {run_id} --request {full_hash(stack, run_id)}" in listed
    stale = stack.aurora("approve", run_id, "--request", "0" * 64, env=cli, check=False)
    assert stale.returncode == 2 and "changed since you looked" in stale.stderr
    alice.goto(f"{stack.url}/ui/runs/{run_id}")
    assert HIDDEN_HTML in alice.inner_text("main") and "SIMULATED" in alice.inner_text("main")
    alice.locator("button.approve").click()
    assert "Your approval is recorded" in alice.inner_text("body")
    assert stack.wait_status(run_id, {"succeeded"})["approvals"]["votes"][0]["counts"] is True
