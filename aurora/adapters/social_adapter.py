"""Facebook page posts and Instagram's two-step publishing, through the versioned Graph API.

Tokens travel in the ``Authorization`` header, never in a URL that could be logged. Graph errors
are classified by ``error.code``. A publish that timed out is checked (the page's feed, the
container's ``status_code``) before it is tried again, so nothing is posted twice.
"""

from __future__ import annotations

if __name__ == "__main__" and not __package__:  # run as a file: python3 aurora/adapters/social_adapter.py
    import sys
    from pathlib import Path

    sys.path[0] = str(Path(__file__).resolve().parents[2])  # the repository, not this folder (http.py)
    from aurora.adapters.script import rerun

    rerun("aurora.adapters.social_adapter")

import time
from datetime import UTC, datetime
from typing import Any

from ..secrets import Secrets
from . import adhoc, http
from .base import Adapter, CallContext, LiveCallFailed, bearer

GRAPH_BASE = "https://graph.facebook.com"
GRAPH_VERSION = "v21.0"
#: Graph error codes worth retrying: throttling (4, 17, 32, 613) and transient errors (1, 2)
RETRY_CODES = frozenset({1, 2, 4, 17, 32, 613})
#: codes that mean the token or its permissions are wrong
AUTH_CODES = frozenset({10, 102, 190})


def classify(status: int, body: dict[str, Any]) -> str:
    code = (body.get("error") or {}).get("code")
    if code in RETRY_CODES or status == 429 or status >= 500:
        return "retry"
    if code in AUTH_CODES or (isinstance(code, int) and 200 <= code <= 299) or status in (401, 403):
        return "auth"
    return "invalid"


class SocialAdapter(Adapter):
    name = "social"
    operation = "post"
    simulated_msg = "Simulated social post"
    live_msg = "Posted"
    live_capable = True
    repeat_safe = False

    def graph(self, ctx: CallContext) -> str:
        settings = ctx.settings(self.name)
        return f"{settings.get('base_url', GRAPH_BASE).rstrip('/')}/{settings.get('graph_version', GRAPH_VERSION)}"

    def build(self, payload: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        graph = self.graph(ctx)
        if payload["platform"] == "facebook":
            page = ctx.secrets.get("social", "facebook", "page_id") or "PLACEHOLDER"
            form = {"message": payload["content"]}
            if payload.get("media_url"):
                form["link"] = payload["media_url"]
            return {"steps": [{"method": "POST", "url": f"{graph}/{page}/feed", "headers": bearer(), "form": form}]}
        account = ctx.secrets.get("social", "instagram", "account_id") or "PLACEHOLDER"
        return {
            "steps": [
                {"method": "POST", "url": f"{graph}/{account}/media", "headers": bearer(),
                 "form": {"image_url": payload.get("media_url"), "caption": payload["content"]}},
                {"method": "GET", "url": f"{graph}/{{creation_id}}", "headers": bearer(),
                 "params": {"fields": "status_code"}, "until": "status_code == FINISHED"},
                {"method": "POST", "url": f"{graph}/{account}/media_publish", "headers": bearer(),
                 "form": {"creation_id": "{creation_id}"}},
            ]
        }

    def credentials_configured(self, payload: dict[str, Any], secrets: Secrets) -> bool:
        platform = payload.get("platform", "facebook")
        target = "page_id" if platform == "facebook" else "account_id"
        return secrets.configured("social", platform, "access_token") and secrets.configured("social", platform, target)

    def credential(self, payload: dict[str, Any]) -> tuple[str, ...]:
        return ("social", payload.get("platform", "facebook"), "access_token")

    def send(self, payload: dict[str, Any], request: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        platform = payload["platform"]
        headers = {"Authorization": f"Bearer {ctx.secrets.get('social', platform, 'access_token') or ''}"}
        steps = request["steps"]
        if platform == "facebook":
            return self._facebook(steps[0], headers, ctx)
        return self._instagram(steps, headers, ctx)

    def _call(self, ctx: CallContext, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        return http.call(self.name, ctx, method, url, classify=classify, **kwargs)

    def _facebook(self, step: dict[str, Any], headers: dict[str, str], ctx: CallContext) -> dict[str, Any]:
        started = datetime.now(UTC)
        for attempt in range(2):
            try:
                body = self._call(ctx, "POST", step["url"], data=step["form"], headers=headers)
                return {"id": body.get("id"), "platform": "facebook"}
            except LiveCallFailed as exc:
                if exc.kind != "ambiguous" or attempt:
                    raise
                found = self._find_post(step, headers, ctx, started)
                if found:
                    return {"id": found, "platform": "facebook", "verified_after_timeout": True}
        raise LiveCallFailed("unreachable", "unavailable")  # pragma: no cover - the loop returns or raises

    def _find_post(self, step: dict[str, Any], headers: dict[str, str], ctx: CallContext,
                   since: datetime) -> str | None:
        """After a timed-out post: is it on the page already? Then it must not be posted again."""
        body = self._call(ctx, "GET", step["url"], params={"fields": "id,message,created_time", "limit": 10},
                          headers=headers)
        for post in body.get("data", []):
            created = post.get("created_time", "")
            try:
                when = datetime.strptime(created, "%Y-%m-%dT%H:%M:%S%z")
            except ValueError:
                continue
            if post.get("message") == step["form"]["message"] and when.timestamp() >= since.timestamp() - 120:
                return post.get("id")
        return None

    def _instagram(self, steps: list[dict[str, Any]], headers: dict[str, str], ctx: CallContext) -> dict[str, Any]:
        settings = ctx.settings(self.name)
        create, status, publish = steps
        creation_id = self._call(ctx, "POST", create["url"], data=create["form"], headers=headers)["id"]
        status_url = status["url"].replace("{creation_id}", creation_id)
        for _ in range(int(settings.get("publish_poll_attempts", 30))):
            code = self._call(ctx, "GET", status_url, params={"fields": "status_code"}, headers=headers).get("status_code")
            if code == "FINISHED":
                break
            if code in ("ERROR", "EXPIRED"):
                raise LiveCallFailed(f"Instagram could not process the media ({code})", "invalid")
            time.sleep(float(settings.get("publish_poll_seconds", 2)))
        else:
            raise LiveCallFailed("the media container never became ready", "unavailable")
        form = {"creation_id": creation_id}
        for attempt in range(2):
            try:
                body = self._call(ctx, "POST", publish["url"], data=form, headers=headers)
                return {"id": body.get("id"), "creation_id": creation_id, "platform": "instagram"}
            except LiveCallFailed as exc:
                if exc.kind not in ("ambiguous", "unavailable") or attempt:
                    raise
                check = self._call(ctx, "GET", status_url, params={"fields": "status_code"}, headers=headers)
                if check.get("status_code") == "PUBLISHED":
                    return {"id": None, "creation_id": creation_id, "platform": "instagram",
                            "verified_after_timeout": True}
        raise LiveCallFailed("unreachable", "unavailable")  # pragma: no cover


def post_to_social(platform: str, content: str, media_url: str | None = None) -> dict[str, Any]:
    """The seed's call: ``post_to_social("instagram", "Post-Text", media_url)``."""
    payload: dict[str, Any] = {"platform": platform, "content": content}
    if media_url:
        payload["media_url"] = media_url
    return adhoc.call(SocialAdapter(), payload)


if __name__ == "__main__":  # pragma: no cover
    from .selftest import main

    main("social")
