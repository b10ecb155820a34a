"""The run page follows its run live (server-sent events) in a real browser: a change made
elsewhere appears on the page without a reload, and the page is drawn afresh once the run ends."""

from __future__ import annotations

from test_web_ui import browser, sign_in, stack, submit_charge  # noqa: F401 - fixtures


def test_the_run_page_shows_a_change_made_elsewhere_as_it_happens(browser, stack) -> None:  # noqa: F811
    run_id = submit_charge(stack)
    page = sign_in(browser, stack, "alice")
    page.goto(f"{stack.url}/ui/runs/{run_id}")
    assert page.inner_text("#status") == "waiting for approval"  # the page's words for the status
    page.evaluate("window.notReloaded = true")
    page.wait_for_timeout(500)  # the stream is open
    assert stack.http("POST", f"/workflows/{run_id}/cancel", key="sam").json()["status"] == "cancelled"
    # the badge changes as the event arrives, then the page is drawn again for the final state
    page.wait_for_function("document.getElementById('status').textContent === 'cancelled'", timeout=10_000)
    page.wait_for_function("window.notReloaded === undefined", timeout=10_000)
    assert "Cancelled" in page.inner_text("#timeline")
    assert page.inner_text("#status") == "cancelled"
