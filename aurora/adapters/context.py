"""The context for adapter calls made outside a run (the seed's module-level functions)."""

from __future__ import annotations

from ..config import load_settings
from ..policy import PolicyStore
from ..secrets import load_secrets
from .base import CallContext


def default_context() -> CallContext:
    settings = load_settings()
    return CallContext(
        run_id=None,
        policy=PolicyStore(settings.policy_file).current(),
        secrets=load_secrets(settings.secrets_file),
    )
