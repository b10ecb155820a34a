"""A live payment through the real stack: approved from the CLI, its worker killed in the middle
of the Stripe call, retried by another worker with the same idempotency key: one charge."""

from __future__ import annotations

import json
import time

from conftest import ROOT, free_port
from fakes import FakeServer, StripeState

KEY = "sk_test_stackSECRET123"


def test_worker_killed_during_a_stripe_call_charges_once(make_stack, tmp_path) -> None:
    stripe = StripeState(KEY)
    posts = []

    def slow_first_charge(request):
        reply = stripe(request)
        if request.method == "POST":
            posts.append(time.monotonic())
            if len(posts) == 1:
                reply.delay = 8  # Stripe has made the charge; the answer is still on its way
        return reply

    with FakeServer(slow_first_charge) as server:
        policy = json.loads((ROOT / "policy" / "batch8_policy.json").read_text())
        policy.update(dry_run=False, allow_payments=True)
        policy["security"]["canary_percent"] = 100
        policy["adapters"]["stripe"].update(base_url=server.url, retries=0, timeout_seconds=30)
        (tmp_path / "policy.json").write_text(json.dumps(policy))
        secrets = tmp_path / "secrets.json"
        secrets.write_text(json.dumps({"stripe": {"secret_key": KEY}}))
        secrets.chmod(0o600)
        stack = make_stack(AURORA_POLICY_FILE=str(tmp_path / "policy.json"), AURORA_SECRETS_FILE=str(secrets),
                           AURORA_LEASE_SECONDS="2")
        stack.port = free_port()
        stack.aurora("db", "upgrade")
        for name, role in (("admin", "admin"), ("sam", "submitter"), ("alice", "approver"), ("bob", "approver")):
            stack.keys[name] = stack.aurora("keys", "create", name, "--role", role).stdout.strip()
        stack.start("web", "serve", "--port", str(stack.port), "--workers", "1")
        stack.start("worker0", "worker", "-c", "1")
        stack.start("system", "worker", "--system")
        stack.start("beat", "beat")
        stack.wait_healthy()

        doc = {"name": "pay", "goal": "charge", "payload": {"customer": "cus_9", "amount": "42.50",
                                                            "currency": "EUR", "payment_method": "pm_1"}}
        run_id = stack.http("POST", "/workflows", key="sam", json=doc).json()["id"]
        stack.wait_status(run_id, {"awaiting_approval"})
        for who in ("alice", "bob"):
            cli_env = {**stack.env, "AURORA_URL": stack.url, "AURORA_TOKEN": stack.keys[who]}
            waiting = stack.aurora("approvals", env=cli_env).stdout
            assert run_id in waiting and "42.50" in waiting
            # vote on exactly what was listed: the line names the request hash
            request = waiting.split(f"aurora approve {run_id} --request ")[1].split()[0]
            voted = stack.aurora("approve", run_id, "--request", request, "-m", f"ok from {who}", env=cli_env).stdout
            assert run_id in voted

        deadline = time.monotonic() + 30
        while not posts and time.monotonic() < deadline:
            time.sleep(0.05)
        assert posts, "the worker never called Stripe"
        stack.kill("worker0")  # SIGKILL while Stripe's answer is on its way
        stack.start("worker1", "worker", "-c", "1")
        run = stack.wait_status(run_id, {"succeeded", "failed"}, timeout=90)

    assert run["status"] == "succeeded", run["error"]
    assert run["result"]["response"]["id"] == "pi_0001" and run["result"]["mode"] == "live"
    charges = server.requests_to("/v1/payment_intents")
    assert len(charges) == 2, "the second worker asked again"
    assert len({c.headers["idempotency-key"] for c in charges}) == 1
    assert len(stripe.intents) == 1, "and Stripe charged once"
    assert [(v["voter"], v["channel"]) for v in run["approvals"]["votes"]] == [("alice", "cli"), ("bob", "cli")]
