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


SCREENSHOTS = ROOT / "docs" / "screenshots"
DESKTOP = {"viewport": {"width": 1280, "height": 900}}
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
LOCALES = {"de": "de-DE", "en": "en-US"}


def text(where, selector: str | None = None) -> str:
    """What a person reads on a page or in a part of it, with the non-breaking space of
    "150,00 €" as a plain one."""
    if hasattr(where, "goto"):  # a page
        where = where.locator(selector or "body")
    elif selector:
        where = where.locator(selector)
    return where.inner_text().replace("\u00a0", " ")


def fits_a_phone(page) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"{page.url} is {width} px wide: a phone would scroll sideways"


def shoot(page, name: str) -> None:
    """A picture of the page for docs/screenshots/ (the README shows one)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def test_two_approvers_approve_a_payment_in_the_browser(browser, stack) -> None:
    run_id = submit_charge(stack)
    alice = sign_in(browser, stack, "alice", locale="de-DE", **DESKTOP)  # a German browser
    assert alice.get_attribute("html", "lang") == "de"
    card = alice.locator(f"section[data-run='{run_id}']")
    shown = text(card)
    assert "Stripe bucht 150,00 € beim Kunden cus_123 ab." in shown
    assert "SIMULIERT" in shown and "Es wird nichts wirklich gesendet" in shown
    assert "0 von 2 Freigaben; noch 2 nötig" in shown
    assert "15000" not in shown  # the cents are behind "Details" only
    card.locator("details.raw summary").click()
    assert '"amount": 15000' in text(card, "details.raw pre")
    card.locator("input[name=comment]").fill("Rechnung geprüft")
    card.locator("button.approve").click()
    assert text(alice, "#vote-message") == "Ihre Freigabe ist gespeichert. Es fehlt noch 1 Freigabe."
    assert "1 von 2 Freigaben (freigegeben von alice); noch 1 nötig" in text(alice, ".approvals")
    assert stack.http("GET", f"/workflows/{run_id}").json()["approvals"]["received"] == 1

    bob = sign_in(browser, stack, "bob", locale="en-GB", **PHONE)  # an English phone
    bob.goto(f"{stack.url}/ui/runs/{run_id}")  # the link from the notification mail
    assert stack.http("GET", f"/workflows/{run_id}").json()["status"] == "awaiting_approval"  # opening is no vote
    assert "Stripe will charge €150.00 to customer cus_123." in text(bob)
    fits_a_phone(bob)
    bob.locator("button.approve").click()
    run = stack.wait_status(run_id, {"succeeded"})
    votes = [(v["voter"], v["channel"], v["comment"]) for v in run["approvals"]["votes"]]
    assert votes == [("alice", "web", "Rechnung geprüft"), ("bob", "web", None)]
    message = text(bob, "#vote-message")
    assert message.startswith("Your approval is recorded and was the last one needed.")
    assert "queued" not in message
    status = bob.get_attribute("#status", "data-status")
    # The message fits the state the page shows beside it: done already, or being done.
    assert ("carried out as a simulation" in message) == (status == "succeeded"), (message, status)
    deadline = time.monotonic() + 10
    while bob.get_attribute("#status", "data-status") != "succeeded" and time.monotonic() < deadline:
        bob.reload()
    assert text(bob, "#status") == "done" and "SIMULATED" in text(bob, "#mode")
    assert "Stripe would have charged €150.00 to customer cus_123." in text(bob, "#outcome")
    timeline = text(bob, "ol.timeline")
    assert "Done" in timeline and "Approval — alice" in timeline and "run." not in timeline
    assert "of 2" not in text(bob, "main")  # no vote count on a run that no longer waits
    fits_a_phone(bob)


def test_a_rejected_run_says_who_rejected_it_and_submitter_and_viewer_see_no_buttons(browser, stack) -> None:
    run_id = submit_charge(stack)
    for who in ("sam", "vic"):
        page = sign_in(browser, stack, who)
        page.goto(f"{stack.url}/ui/runs/{run_id}")
        assert page.locator("button.approve").count() == 0
    alice = sign_in(browser, stack, "alice", locale="de-DE")
    alice.goto(f"{stack.url}/ui/runs/{run_id}")
    alice.fill("input[name=comment]", "falscher Betrag")
    alice.click("button.reject")
    assert stack.wait_status(run_id, {"rejected"})["approvals"]["votes"][0]["comment"] == "falscher Betrag"
    assert text(alice, "#vote-message") == "Ihre Ablehnung ist gespeichert: der Auftrag wird nicht ausgeführt."
    assert text(alice, "#outcome") == ("Abgelehnt von alice. Kommentar: „falscher Betrag“. "
                                       "Es wurde nichts gesendet.")
    main = text(alice, "main")
    assert "von 2" not in main and "nötig" not in main and "missing" not in main
    english = sign_in(browser, stack, "bob")
    english.goto(f"{stack.url}/ui/runs/{run_id}")
    assert text(english, "#outcome") == "Rejected by alice. Their comment: “falscher Betrag”. Nothing was sent."


def test_the_language_link_switches_and_is_kept(browser, stack) -> None:
    run_id = submit_charge(stack)
    page = sign_in(browser, stack, "alice", locale="en-US")
    page.goto(f"{stack.url}/ui/runs/{run_id}")
    assert "Approve" in text(page, "form.vote")
    page.click("nav.lang a[hreflang=de]")
    assert page.url.endswith(f"/ui/runs/{run_id}")  # back on the same page
    assert "Freigeben" in text(page, "form.vote") and page.get_attribute("html", "lang") == "de"
    page.goto(stack.url + "/ui/")
    assert "Wartet auf Ihre Freigabe" in text(page, "h1")  # the cookie outlives the browser's language
    # The vote still binds to what was shown: the hidden request_hash is on the German form too.
    assert page.locator("form.vote input[name=request_hash]").get_attribute("value") == full_hash(stack, run_id)
    # A vote for another rendering than the run's is refused, in the page's language.
    page.goto(f"{stack.url}/ui/runs/{run_id}")
    page.evaluate("document.querySelector('form.vote input[name=request_hash]').value = '0'.repeat(64)")
    page.click("button.approve")
    assert "hat sich geändert, seit Sie ihn angesehen haben" in text(page, ".flash.error")
    assert stack.http("GET", f"/workflows/{run_id}").json()["approvals"]["received"] == 0
    page.click("nav.lang a[hreflang=en]")
    page.goto(stack.url + "/ui/")
    assert "Waiting for your approval" in text(page, "h1")
    away = page.request.get(stack.url + "/ui/language/de?next=https://evil.example/", max_redirects=0)
    assert away.status == 302 and away.headers["location"].endswith("/ui/")  # never a way off the site


def test_every_page_in_both_languages_fits_a_phone_and_is_photographed(browser, stack) -> None:
    waiting = submit_charge(stack)
    rejected = submit_charge(stack)
    stack.http("POST", f"/workflows/{rejected}/reject", key="alice", json={"comment": "falscher Betrag"})
    done = stack.submit("send_report", key="sam")
    stack.wait_status(done, {"succeeded"})
    pages = {"login": "/ui/login", "waiting": "/ui/", "run-waiting": f"/ui/runs/{waiting}",
             "run-rejected": f"/ui/runs/{rejected}", "run-done": f"/ui/runs/{done}", "nodes": "/ui/nodes"}
    for lang, locale in LOCALES.items():
        for width, context in (("desktop", DESKTOP), ("phone", PHONE)):
            page = browser.new_context(locale=locale, **context).new_page()
            for name, path in pages.items():
                if name == "login":
                    page.goto(stack.url + path)
                else:
                    if "/ui/login" in page.url or page.url == "about:blank":
                        page.goto(stack.url + "/ui/login")
                        page.fill("#key", stack.keys["bob"])
                        page.click("button[type=submit]")
                    page.goto(stack.url + path)
                assert page.get_attribute("html", "lang") == lang
                headers = page.request.get(stack.url + path, max_redirects=0).headers
                assert headers["content-security-policy"] == "frame-ancestors 'none'"
                assert headers["x-frame-options"] == "DENY"
                if width == "phone":
                    fits_a_phone(page)
                shoot(page, f"{name}-{lang}-{width}")
            page.context.close()
    assert len(list(SCREENSHOTS.glob("*-*-*.png"))) >= len(pages) * 4


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
