"""Typeform: read a form's responses with ``GET /forms/{id}/responses``."""

from __future__ import annotations

from typing import Any

from ..secrets import Secrets
from .base import Adapter, CallContext, bearer
from .context import default_context

API_BASE = "https://api.typeform.com"
PAGE_SIZE = 1000


class TypeformAdapter(Adapter):
    name = "typeform"
    operation = "ingest"
    simulated_msg = "Simulated form ingest"

    def build(self, payload: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        form_id = payload.get("form_id") or ctx.secrets.get("typeform", "form_id") or "PLACEHOLDER"
        return {
            "method": "GET",
            "url": f"{API_BASE}/forms/{form_id}/responses",
            "headers": bearer(),
            "params": {"page_size": PAGE_SIZE},
        }

    def credentials_configured(self, payload: dict[str, Any], secrets: Secrets) -> bool:
        return secrets.configured("typeform", "token")


def ingest_forms(form_id: str | None = None) -> dict[str, Any]:
    """The seed's call: ``ingest_forms()`` reads the configured form."""
    payload = {"form_id": form_id} if form_id else {}
    return TypeformAdapter().call(payload, default_context()).as_dict()


if __name__ == "__main__":  # pragma: no cover
    import json

    print(json.dumps(ingest_forms(), indent=2))
