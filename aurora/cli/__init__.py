"""The ``aurora`` command, one module per area; importing them registers their commands."""

from __future__ import annotations

from . import admin, backups, definitions, federation, ledger, stack, workflows  # noqa: F401 - registers the commands
from ._common import main

__all__ = ["main"]
