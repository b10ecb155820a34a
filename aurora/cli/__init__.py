"""The ``aurora`` command, one module per area; importing them registers their commands."""

from __future__ import annotations

from . import admin, backups, definitions, federation, ledger, stack, workflows  # noqa: F401 - registers the commands
from ._common import main
from ._output import add_json_option

add_json_option(main)

__all__ = ["main"]
