"""The context for adapter calls made outside a run (kept for the seed's import path)."""

from __future__ import annotations

from .adhoc import default_context

__all__ = ["default_context"]
