"""The ``aurora`` command, one module per area; a module is imported when one of its commands runs
(``_common.COMMAND_MODULES``)."""

from __future__ import annotations

from ._common import main

__all__ = ["main"]
