"""AI engines asked by goal ``analyse``: OpenAI-compatible chat completions (perplexity,
gpt5_genius) and the Anthropic Messages API (claude). Base URLs and models come from the policy
(``ki_routing.engines``), keys from the secrets file (``engines.<name>.api_key``).

The router ranks the engines; this adapter asks the first one that is not cooling down. An engine
that times out, answers 5xx or 429 is retried (429 after its ``Retry-After``), then counted as a
failure and the next engine in the ranking is asked; the result says so. An auth error is never
retried: a wrong key will not become right. Unless the policy keeps engines in dry run, an engine
without a key is skipped like a failed one: when no engine answers, the run fails with an error
that names each engine and why, instead of "succeeding" with a simulated analysis.
"""

from __future__ import annotations

import random
import time
from typing import Any

from ..errors import AdapterError
from ..secrets import REDACTED, Secrets
from .base import Adapter, AdapterResult, CallContext, Mode, decide_mode, granted

#: used when the policy names no engines section
DEFAULT_ENGINES: dict[str, dict[str, Any]] = {
    "perplexity": {"api": "openai", "base_url": "https://api.perplexity.ai", "model": "sonar"},
    "gpt5_genius": {"api": "openai", "base_url": "https://api.openai.com/v1", "model": "gpt-5"},
    "claude": {"api": "anthropic", "base_url": "https://api.anthropic.com/v1", "model": "claude-sonnet-4-5"},
}
DEFAULT_FALLBACK = {"failures_before_cooldown": 3, "cooldown_seconds": 300, "retries": 2,
                    "timeout_seconds": 60, "max_retry_after_seconds": 30}
ANTHROPIC_VERSION = "2023-06-01"


class EngineUnavailable(AdapterError):
    """Raised when an engine keeps failing (timeouts, 5xx, 429) after its retries."""


class EngineRefused(AdapterError):
    """Raised when an engine refuses the request for good (auth errors, other 4xx)."""


def engine_config(ctx: CallContext, engine: str) -> dict[str, Any]:
    engines = ctx.policy.routing.get("engines") or DEFAULT_ENGINES
    if engine not in engines:
        raise AdapterError(f"engine {engine!r} is not configured in ki_routing.engines")
    return {"max_tokens": 1024, **engines[engine]}


def fallback_settings(ctx: CallContext) -> dict[str, Any]:
    return {**DEFAULT_FALLBACK, **ctx.policy.routing.get("fallback", {})}


class EngineAdapter(Adapter):
    name = "engine"
    operation = "analyse"
    simulated_msg = "Simulated analysis"
    live_capable = True
    repeat_safe = True  # asking again is harmless
    has_side_effects = False

    def build(self, payload: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        engine = payload["engine"]
        config = engine_config(ctx, engine)
        base = config["base_url"].rstrip("/")
        messages = [{"role": "user", "content": payload["text"]}]
        if config["api"] == "anthropic":
            return {
                "method": "POST",
                "url": f"{base}/messages",
                "headers": {"x-api-key": REDACTED, "anthropic-version": ANTHROPIC_VERSION,
                            "content-type": "application/json"},
                "json": {"model": config["model"], "max_tokens": config["max_tokens"], "messages": messages},
            }
        return {
            "method": "POST",
            "url": f"{base}/chat/completions",
            "headers": {"Authorization": f"Bearer {REDACTED}", "Content-Type": "application/json"},
            "json": {"model": config["model"], "messages": messages, "max_tokens": config["max_tokens"]},
        }

    def credentials_configured(self, payload: dict[str, Any], secrets: Secrets) -> bool:
        return secrets.configured("engines", payload.get("engine", ""), "api_key")

    def decide(self, payload: dict[str, Any], ctx: CallContext) -> Mode:
        """Live if any engine of the fallback chain may be called live (the call skips those that
        may not); otherwise the first engine's simulated mode. One decision for the gate, the
        binding approvers see and the call: a run decided simulated never reaches a provider."""
        first: Mode | None = None
        for engine in payload.get("candidates") or [payload["engine"]]:
            attempt = {**payload, "engine": engine}
            mode = decide_mode(self.name, ctx, self.credentials_configured(attempt, ctx.secrets))
            if mode.live:
                return mode
            first = first or mode
        assert first is not None
        return first

    def call(self, payload: dict[str, Any], ctx: CallContext, mode: Mode | None = None) -> AdapterResult:
        started = time.perf_counter()
        candidates = payload.get("candidates") or [payload["engine"]]
        skipped: list[dict[str, str]] = []
        if mode is not None and not mode.live:
            # Decided simulated (by decide(), above): no engine is asked, whatever the keys say now.
            keyless = not any(self.credentials_configured({**payload, "engine": e}, ctx.secrets) for e in candidates)
            if mode.intended_live and keyless and ctx.run_id is not None:
                # The policy wants a real analysis and no engine of the chain has a key: a
                # simulation in its place would end the run "succeeded" with no analysis.
                reasons = "; ".join(f"{e}: no API key (secrets: engines.{e}.api_key)" for e in candidates)
                raise AdapterError(f"no engine could answer ({reasons})")
            return self._result(payload["engine"], mode, self.build(payload, ctx), None, [payload["engine"]], [],
                                started, ctx)
        for engine in candidates:
            until = ctx.health.cooling_until(engine) if ctx.health else None
            if until is not None:
                skipped.append({"engine": engine, "why": f"cooling down until {until.isoformat()}"})
                continue
            attempt = {**payload, "engine": engine}
            request = self.build(attempt, ctx)
            configured = self.credentials_configured(attempt, ctx.secrets)
            # the grant and the lease, as for every other adapter: this loop sends by itself
            mode = granted(decide_mode(self.name, ctx, configured), ctx)
            if not mode.live and mode.intended_live and not configured and ctx.run_id is not None:
                # The policy wants a real analysis: an engine without a key cannot give one, and
                # a simulation in its place would end the run "succeeded" with no analysis.
                skipped.append({"engine": engine, "why": f"no API key (secrets: engines.{engine}.api_key)"})
                continue
            if not mode.live:
                return self._result(engine, mode, request, None, candidates, skipped, started, ctx)
            try:
                response = self._send(engine, request, ctx)
            except (EngineUnavailable, EngineRefused) as exc:
                if ctx.health:
                    ctx.health.failure(engine, str(exc))
                skipped.append({"engine": engine, "why": str(exc)})
                continue
            if ctx.health:
                ctx.health.success(engine)
            return self._result(engine, mode, request, response, candidates, skipped, started, ctx)
        reasons = "; ".join(f"{s['engine']}: {s['why']}" for s in skipped)
        raise AdapterError(f"no engine could answer ({reasons})" if skipped else "no engine to ask")

    def _result(self, engine: str, mode: Mode, request: dict[str, Any], response: dict[str, Any] | None,
                candidates: list[str], skipped: list[dict[str, str]], started: float, ctx: CallContext) -> AdapterResult:
        if not mode.live and ctx.simulated_latency_ms:
            time.sleep(ctx.simulated_latency_ms / 1000)
        msg = "Analysis" if mode.live else self.simulated_msg
        result = AdapterResult(self.name, self.operation, mode, msg, request, response=response)
        result.extra["engine"] = engine
        if engine != candidates[0]:
            result.extra["fallback"] = {"from": candidates[0], "to": engine, "skipped": skipped}
        result.duration_ms = (time.perf_counter() - started) * 1000
        return result

    def _send(self, engine: str, request: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        """One live call with retries; the real key replaces the redaction marker only here."""
        import requests  # by the first live call: a worker that only simulates never loads it (~7 MB)

        settings = fallback_settings(ctx)
        key = ctx.secrets.get("engines", engine, "api_key") or ""
        headers = {k: (v.replace(REDACTED, key) if isinstance(v, str) else v) for k, v in request["headers"].items()}
        last = "no attempt"
        for attempt in range(settings["retries"] + 1):
            # Every engine call counts against adapters.engine.rate_limit, shared like the others'.
            ctx.wait_for_rate(self.name)
            try:
                response = requests.post(request["url"], json=request["json"], headers=headers,
                                         timeout=settings["timeout_seconds"])
            except requests.RequestException as exc:
                last = f"{exc.__class__.__name__} (attempt {attempt + 1})"
                self._pause(attempt, None, settings)
                continue
            if response.status_code in (401, 403):
                raise EngineRefused(f"authentication failed (HTTP {response.status_code}); not retried")
            if response.status_code == 429 or response.status_code >= 500:
                last = f"HTTP {response.status_code} (attempt {attempt + 1})"
                if attempt < settings["retries"]:
                    self._pause(attempt, response.headers.get("Retry-After"), settings)
                continue
            if response.status_code >= 400:
                raise EngineRefused(f"request refused (HTTP {response.status_code})")
            try:
                return parse_answer(request, response.json())
            except (ValueError, KeyError, IndexError, TypeError):
                raise EngineRefused("the answer was not in the expected format") from None
        raise EngineUnavailable(f"unavailable after {settings['retries'] + 1} attempts: {last}")

    @staticmethod
    def _pause(attempt: int, retry_after: str | None, settings: dict[str, Any]) -> None:
        if retry_after is not None:
            try:
                wait = float(retry_after)
            except ValueError:
                wait = 1.0
        else:
            wait = min(0.25 * 2**attempt, 4.0) * (0.5 + random.random())  # noqa: S311 - jitter, not security
        time.sleep(min(max(wait, 0.0), settings["max_retry_after_seconds"]))


def parse_answer(request: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """The answer text, model and token usage, from either API's response."""
    if "/messages" in request["url"]:
        text = "".join(part.get("text", "") for part in body["content"] if part.get("type") == "text")
        return {"text": text, "model": body.get("model"), "usage": body.get("usage"),
                "stop_reason": body.get("stop_reason")}
    choice = body["choices"][0]
    return {"text": choice["message"]["content"], "model": body.get("model"), "usage": body.get("usage"),
            "finish_reason": choice.get("finish_reason")}
