"""AI engines asked by goal ``analyse``: OpenAI-compatible chat completions, Anthropic Messages."""

from __future__ import annotations

from typing import Any

from ..secrets import REDACTED, Secrets
from .base import Adapter, CallContext

#: engine -> (API style, base URL, model); the router issue moves these into the policy
ENGINES: dict[str, tuple[str, str, str]] = {
    "perplexity": ("openai", "https://api.perplexity.ai", "sonar"),
    "gpt5_genius": ("openai", "https://api.openai.com/v1", "gpt-5"),
    "claude": ("anthropic", "https://api.anthropic.com/v1", "claude-sonnet-4-5"),
}
MAX_TOKENS = 1024


class EngineAdapter(Adapter):
    name = "engine"
    operation = "analyse"
    simulated_msg = "Simulated analysis"

    def build(self, payload: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        engine = payload["engine"]
        style, base, model = ENGINES.get(engine, ENGINES["gpt5_genius"])
        messages = [{"role": "user", "content": payload["text"]}]
        if style == "anthropic":
            return {
                "method": "POST",
                "url": f"{base}/messages",
                "headers": {"x-api-key": REDACTED, "anthropic-version": "2023-06-01"},
                "json": {"model": model, "max_tokens": MAX_TOKENS, "messages": messages},
            }
        return {
            "method": "POST",
            "url": f"{base}/chat/completions",
            "headers": {"Authorization": f"Bearer {REDACTED}"},
            "json": {"model": model, "messages": messages},
        }

    def credentials_configured(self, payload: dict[str, Any], secrets: Secrets) -> bool:
        return secrets.configured("engines", payload.get("engine", ""))
