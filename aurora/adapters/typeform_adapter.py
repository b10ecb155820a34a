"""Typeform: read a form's responses with ``GET /forms/{id}/responses`` and a bearer token.

Each ingest continues after the token of the last response the previous one stored (the
``after`` cursor, kept per form in the database); responses are stored as events, deduplicated
by their token. The policy's rate limit (Typeform allows 2 requests per second) applies.
"""

from __future__ import annotations

if __name__ == "__main__" and not __package__:  # run as a file: python3 aurora/adapters/typeform_adapter.py
    import sys
    from pathlib import Path

    sys.path[0] = str(Path(__file__).resolve().parents[2])  # the repository, not this folder (http.py)
    from aurora.adapters.script import rerun

    rerun("aurora.adapters.typeform_adapter")

import uuid
from collections.abc import Iterable
from typing import Any

from sqlalchemy import literal, select
from sqlalchemy.orm import Session

from ..secrets import Secrets
from . import adhoc, http
from .base import Adapter, AdapterResult, CallContext, bearer

API_BASE = "https://api.typeform.com"
PAGE_SIZE = 1000
#: namespace of the event ids made from response tokens
RESPONSE_NAMESPACE = uuid.UUID("6f1c7c1e-5a0b-4c55-9a57-3f1f0a7e2b10")


def response_event_id(form_id: str, token: str) -> str:
    return str(uuid.uuid5(RESPONSE_NAMESPACE, f"{form_id}:{token}"))


def held_responses(session: Session, node: str, ids: Iterable[str]) -> set[str]:
    """Which of these response event ids this node holds already: a lookup in the unique index
    of the events whose ids can meet again (``Event.UNIQUE_WHERE``: the type, written out, is
    what lets the database use that partial index)."""
    from ..models import Event

    return set(session.scalars(select(Event.id).where(
        Event.origin == node, Event.id.in_(list(ids)),
        Event.type == literal("typeform.response", literal_execute=True))))


class TypeformAdapter(Adapter):
    name = "typeform"
    operation = "ingest"
    simulated_msg = "Simulated form ingest"
    live_msg = "Forms ingested"
    live_capable = True
    repeat_safe = True  # reading is harmless; storing is deduplicated
    has_side_effects = False

    def form_id(self, payload: dict[str, Any], ctx: CallContext) -> str:
        return payload.get("form_id") or ctx.secrets.get("typeform", "form_id") or "PLACEHOLDER"

    def build(self, payload: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        settings = ctx.settings(self.name)
        params: dict[str, Any] = {"page_size": min(int(settings.get("page_size", PAGE_SIZE)), PAGE_SIZE)}
        if payload.get("after"):
            params["after"] = payload["after"]
        else:
            params["sort"] = "submitted_at,asc"
        base = settings.get("base_url", API_BASE).rstrip("/")
        return {"method": "GET", "url": f"{base}/forms/{self.form_id(payload, ctx)}/responses",
                "headers": bearer(), "params": params}

    def credentials_configured(self, payload: dict[str, Any], secrets: Secrets) -> bool:
        return secrets.configured("typeform", "token")

    def send(self, payload: dict[str, Any], request: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        settings = ctx.settings(self.name)
        headers = {"Authorization": f"Bearer {ctx.secrets.get('typeform', 'token') or ''}"}
        params = dict(request["params"])
        items: list[dict[str, Any]] = []
        pages = 0
        for pages in range(1, int(settings.get("max_pages", 20)) + 1):  # noqa: B007 - pages is reported
            body = http.call(self.name, ctx, "GET", request["url"], params=params, headers=headers)
            page = body.get("items") or []
            items += page
            if len(page) < params["page_size"]:
                break
            params.pop("sort", None)
            params["after"] = page[-1]["token"]
        return {"form_id": self.form_id(payload, ctx), "items": items, "pages": pages,
                "after": items[-1]["token"] if items else payload.get("after")}

    def persist(self, db: Any, session: Session, node: str, run_id: str, result: AdapterResult) -> None:
        """Store new responses as events and move the form's cursor, in the run's final transaction."""
        from .. import events
        from ..models import FormCursor, utcnow

        response = result.response
        if not result.mode.live or not response:
            return
        form_id, items = response["form_id"], response.pop("items")
        ids = {response_event_id(form_id, item["token"]): item for item in items}
        held = held_responses(session, node, ids)
        for event_id, item in ids.items():
            if event_id not in held:
                events.append(db, session, node, "typeform.response",
                              {"form_id": form_id, "token": item["token"], "submitted_at": item.get("submitted_at"),
                               "answers": item.get("answers", []), "hidden": item.get("hidden", {})},
                              run_id=run_id, event_id=event_id)
        cursor = session.get(FormCursor, form_id) or FormCursor(form_id=form_id, ingested=0)
        cursor.after, cursor.updated_at = response["after"], utcnow()
        cursor.ingested = (cursor.ingested or 0) + len(ids) - len(held)
        session.add(cursor)
        response.update(received=len(items), new=len(ids) - len(held))


def ingest_forms(form_id: str | None = None) -> dict[str, Any]:
    """The seed's call: ``ingest_forms()`` reads the configured form."""
    payload = {"form_id": form_id} if form_id else {}
    return adhoc.call(TypeformAdapter(), payload)


if __name__ == "__main__":  # pragma: no cover
    from .selftest import main

    main("typeform")
