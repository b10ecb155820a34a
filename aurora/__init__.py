"""Aurora: a workflow engine that never does something expensive or public by accident."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
