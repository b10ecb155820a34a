"""Facebook page posts and Instagram's two-step publishing, through the Graph API."""

from __future__ import annotations

from typing import Any

from ..secrets import Secrets
from .base import Adapter, CallContext, bearer
from .context import default_context

GRAPH_BASE = "https://graph.facebook.com/v21.0"


class SocialAdapter(Adapter):
    name = "social"
    operation = "post"
    simulated_msg = "Simulated social post"

    def build(self, payload: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        platform = payload["platform"]
        if platform == "facebook":
            page = ctx.secrets.get("social", "facebook", "page_id") or "PLACEHOLDER"
            form = {"message": payload["content"]}
            if payload.get("media_url"):
                form["link"] = payload["media_url"]
            return {"steps": [{"method": "POST", "url": f"{GRAPH_BASE}/{page}/feed", "headers": bearer(), "form": form}]}
        account = ctx.secrets.get("social", "instagram", "account_id") or "PLACEHOLDER"
        return {
            "steps": [
                {"method": "POST", "url": f"{GRAPH_BASE}/{account}/media", "headers": bearer(),
                 "form": {"image_url": payload.get("media_url"), "caption": payload["content"]}},
                {"method": "GET", "url": f"{GRAPH_BASE}/{{creation_id}}", "headers": bearer(),
                 "params": {"fields": "status_code"}, "until": "status_code == FINISHED"},
                {"method": "POST", "url": f"{GRAPH_BASE}/{account}/media_publish", "headers": bearer(),
                 "form": {"creation_id": "{creation_id}"}},
            ]
        }

    def credentials_configured(self, payload: dict[str, Any], secrets: Secrets) -> bool:
        platform = payload.get("platform", "facebook")
        target = "page_id" if platform == "facebook" else "account_id"
        return secrets.configured("social", platform, "access_token") and secrets.configured("social", platform, target)


def post_to_social(platform: str, content: str, media_url: str | None = None) -> dict[str, Any]:
    """The seed's call: ``post_to_social("instagram", "Post-Text", media_url)``."""
    payload: dict[str, Any] = {"platform": platform, "content": content}
    if media_url:
        payload["media_url"] = media_url
    return SocialAdapter().call(payload, default_context()).as_dict()


if __name__ == "__main__":  # pragma: no cover
    import json

    print(json.dumps(post_to_social("facebook", "Hello"), indent=2))
