"""Goal analyse against fake OpenAI-compatible and Anthropic servers: exact requests, retries,
cool-down and fallback, auth errors not retried, and keys never stored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import whole_run
from fakes import FakeServer, Reply, anthropic_answer, engine_default, openai_answer
from sqlalchemy import select

from aurora import documents
from aurora.models import AuditRecord, Run

ROOT = Path(__file__).resolve().parent.parent
KEYS = {"perplexity": "pplx-live-key-1234", "claude": "sk-ant-live-key-5678", "gpt5_genius": "sk-live-key-9012"}


@pytest.fixture
def server():
    with FakeServer(default=engine_default) as fake:
        yield fake


@pytest.fixture
def live(env, server, runtime):
    """The runtime with dry_run off, engines pointed at the fake server, and keys configured."""
    policy = json.loads((ROOT / "policy" / "batch8_policy.json").read_text())
    policy["dry_run"] = False
    policy["security"]["canary_percent"] = 100  # the canary has its own tests
    for engine in policy["ki_routing"]["engines"].values():
        engine["base_url"] = server.url + "/" + engine["api"]
    policy["ki_routing"]["fallback"] = {"failures_before_cooldown": 2, "cooldown_seconds": 300, "retries": 1,
                                        "timeout_seconds": 2, "max_retry_after_seconds": 0.2}
    Path(env["AURORA_POLICY_FILE"]).write_text(json.dumps(policy))
    secrets = Path(env["AURORA_SECRETS_FILE"])
    secrets.write_text(json.dumps({"engines": {name: {"api_key": key} for name, key in KEYS.items()}}))
    secrets.chmod(0o600)
    runtime.policies._mtime = None  # noqa: SLF001 - force the reload the mtime check would make
    runtime.policies._checked_at = 0
    return runtime


def analyse(runtime, text: str, **payload) -> dict:
    run = runtime.engine.submit(documents.load(json.dumps(
        {"name": "a", "goal": "analyse", "payload": {"text": text, **payload}}), fmt="json"), "sam")
    runtime.engine.execute(run.id)
    with runtime.db.read() as session:
        stored = whole_run(session, session.scalar(select(Run).where(Run.id == run.id)))
        audit = list(session.scalars(select(AuditRecord).where(AuditRecord.run_id == run.id)))
        return {"status": stored.status, "result": stored.result, "error": stored.error, "audit": audit}


def test_perplexity_gets_an_openai_chat_completion_request(live, server) -> None:
    done = analyse(live, "Recherchiere aktuelle Studien zu PBM")
    assert done["status"] == "succeeded", done
    assert done["result"]["mode"] == "live" and done["result"]["engine"] == "perplexity"
    assert done["result"]["response"]["text"] == "openai says hi"
    [request] = server.requests_to("/openai/chat/completions")
    assert request.headers["authorization"] == f"Bearer {KEYS['perplexity']}"
    body = request.json()
    assert body["model"] == "sonar" and body["messages"] == [{"role": "user", "content": "Recherchiere aktuelle Studien zu PBM"}]
    dumped = json.dumps(done["result"]) + json.dumps([a.request for a in done["audit"]])
    assert all(key not in dumped for key in KEYS.values())
    assert done["audit"][0].mode == "live"


def test_claude_gets_an_anthropic_messages_request(live, server) -> None:
    done = analyse(live, "Implementiere die Importfunktion")
    assert done["result"]["engine"] == "claude"
    [request] = server.requests_to("/anthropic/messages")
    assert request.headers["x-api-key"] == KEYS["claude"]
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert request.json()["max_tokens"] == 1024
    assert done["result"]["response"]["text"] == "anthropic says hi"


def test_429_is_retried_after_retry_after_then_succeeds(live, server) -> None:
    server.script("/anthropic/messages", Reply(429, {"type": "error"}, {"Retry-After": "0.1"}),
                  anthropic_answer("second time lucky"))
    done = analyse(live, "Debug the failing tests")
    assert done["result"]["response"]["text"] == "second time lucky"
    assert len(server.requests_to("/anthropic/messages")) == 2


def test_engine_calls_keep_the_engine_rate_limit(live, server, env) -> None:
    """AI engine calls were not rate-limited at all: now adapters.engine.rate_limit holds them."""
    import time

    path = Path(env["AURORA_POLICY_FILE"])
    policy = json.loads(path.read_text())
    policy["adapters"].setdefault("engine", {})["rate_limit"] = "1/second"
    path.write_text(json.dumps(policy))
    live.policies._mtime, live.policies._checked_at = None, 0  # noqa: SLF001
    started = time.monotonic()
    assert analyse(live, "Debug the failing tests")["status"] == "succeeded"
    assert analyse(live, "Debug the failing tests")["status"] == "succeeded"
    assert time.monotonic() - started >= 0.8 and live.limiter.waited.get("engine", 0) > 0.5


def test_failing_engine_falls_back_to_the_next_best_and_cools_down(live, server) -> None:
    # claude answers 503 to everything: two attempts per run (retries: 1), then the next engine.
    server.script("/anthropic/messages", *[Reply(503, {"type": "error"}) for _ in range(4)])
    first = analyse(live, "Refactor the code structure")
    assert first["status"] == "succeeded"
    assert first["result"]["engine"] != "claude"
    assert first["result"]["fallback"]["from"] == "claude"
    assert "HTTP 503" in first["result"]["fallback"]["skipped"][0]["why"]
    analyse(live, "Refactor the code structure")  # second failure: claude now cools down
    calls = len(server.requests_to("/anthropic/messages"))
    third = analyse(live, "Refactor the code structure")
    assert len(server.requests_to("/anthropic/messages")) == calls  # not even asked
    assert "cooling down" in third["result"]["fallback"]["skipped"][0]["why"]


def test_auth_errors_are_not_retried(live, server) -> None:
    server.script("/anthropic/messages", Reply(401, {"type": "error", "error": {"type": "authentication_error"}}))
    done = analyse(live, "Implementiere den Code")
    assert len(server.requests_to("/anthropic/messages")) == 1
    assert "not retried" in done["result"]["fallback"]["skipped"][0]["why"]


def test_every_engine_down_fails_the_run_with_reasons(live, server) -> None:
    server.default = lambda request: Reply(500, {"error": "down"})
    done = analyse(live, "Recherchiere Studien")
    assert done["status"] == "failed"
    assert "no engine could answer" in done["error"]["message"]
    assert done["audit"][0].outcome == "error"


def test_named_engine_is_asked_without_routing(live, server) -> None:
    server.script("/openai/chat/completions", openai_answer("from gpt5", model="gpt-5"))
    done = analyse(live, "Recherchiere Studien", engine="gpt5_genius")
    assert done["result"]["engine"] == "gpt5_genius"
    assert server.requests_to("/openai/chat/completions")[0].json()["model"] == "gpt-5"


def test_dry_run_sends_nothing_and_returns_the_request(runtime, server) -> None:
    done = analyse(runtime, "Recherchiere Studien")
    assert done["result"]["dry_run"] is True and done["result"]["reason"] == "policy: dry_run is true"
    assert done["result"]["request"]["json"]["model"] == "sonar"
    assert server.received == []


def test_a_live_analysis_with_no_engine_key_fails_naming_the_engines(live, env, server) -> None:
    Path(env["AURORA_SECRETS_FILE"]).write_text(json.dumps({"engines": {"claude": {"api_key": "sk-ant-PLACEHOLDER"}}}))
    done = analyse(live, "Implementiere den Code")
    assert done["status"] == "failed" and done["result"] is None
    for engine in KEYS:
        assert f"{engine}: no API key" in done["error"]["message"]
    assert server.received == []


def test_a_failing_engine_does_not_fall_back_to_a_simulation_of_a_keyless_one(live, env, server) -> None:
    # claude (first for code) has a key and fails; the others have none: no analysis, so the run fails.
    Path(env["AURORA_SECRETS_FILE"]).write_text(json.dumps({"engines": {"claude": {"api_key": KEYS["claude"]}}}))
    server.script("/anthropic/messages", *[Reply(503, {"type": "error"}) for _ in range(2)])
    done = analyse(live, "Implementiere den Code")
    assert done["status"] == "failed", done["result"]
    message = done["error"]["message"]
    assert "claude: unavailable" in message and "HTTP 503" in message
    assert "perplexity: no API key" in message and "gpt5_genius: no API key" in message
    assert done["error"]["mode"] == "live"  # it tried for real


def test_a_dry_run_analysis_without_keys_stays_simulated(runtime, env, server) -> None:
    secrets = Path(env["AURORA_SECRETS_FILE"])
    secrets.write_text(json.dumps({"engines": {}}))
    secrets.chmod(0o600)
    done = analyse(runtime, "Implementiere den Code")
    assert done["status"] == "succeeded" and done["result"]["mode"] == "simulated"
    assert done["result"]["reason"] == "policy: dry_run is true" and server.received == []


def test_a_keyless_first_engine_does_not_make_a_live_chain_look_simulated(live, env, server) -> None:
    """The router ranks perplexity first, which has no key; claude has one. The run is decided live
    (its binding, its mode) and called outside the claim transaction — before, it was decided
    simulated, and the "simulated" call then asked claude live inside the write transaction and
    waited for the writer lock it held itself."""
    import threading

    Path(env["AURORA_SECRETS_FILE"]).write_text(json.dumps({"engines": {
        name: {"api_key": KEYS[name]} for name in ("claude", "gpt5_genius")}}))
    done: dict = {}
    worker = threading.Thread(target=lambda: done.update(analyse(live, "Recherchiere aktuelle Studien zu PBM")),
                              daemon=True)
    worker.start()
    worker.join(30)
    assert not worker.is_alive(), "the run hangs"
    assert done["status"] == "succeeded" and done["result"]["mode"] == "live"
    assert done["result"]["fallback"]["from"] == "perplexity" and done["result"]["engine"] != "perplexity"
    assert [r.mode for r in done["audit"]] == ["live"]
