"""Adapters: the only way anything reaches an external service. One module per service.

The seed's imports keep working (``from aurora.adapters import stripe_adapter``); the registry
is loaded on first use, so ``python -m aurora.adapters.stripe_adapter`` runs cleanly.
"""

from __future__ import annotations

from typing import Any

from .base import Adapter, AdapterResult, CallContext, LiveCallFailed, Mode, decide_mode


def __getattr__(name: str) -> Any:
    if name in ("BY_GOAL", "BY_NAME"):
        from . import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'aurora.adapters' has no attribute {name!r}")


__all__ = ["Adapter", "AdapterResult", "CallContext", "LiveCallFailed", "Mode", "decide_mode"]
