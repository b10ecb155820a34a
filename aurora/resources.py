"""Locate the files Aurora ships: JSON Schemas and the default policy.

In a source checkout they live at the top level (``schemas/``, ``policy/``); an installed wheel
carries them as the packages ``aurora.bundled_schemas`` and ``aurora.bundled_policy``.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

_PACKAGES = {"schemas": "aurora.bundled_schemas", "policy": "aurora.bundled_policy"}


def bundled_file(kind: str, name: str) -> Path:
    """Path of a shipped file, ``kind`` being ``schemas`` or ``policy``."""
    try:
        candidate = resources.files(_PACKAGES[kind]) / name
        if candidate.is_file():
            return Path(str(candidate))
    except ModuleNotFoundError:
        pass
    return Path(__file__).resolve().parent.parent / kind / name


@cache
def load_schema(name: str) -> dict[str, Any]:
    """A shipped JSON Schema, parsed once per process."""
    return json.loads(bundled_file("schemas", name).read_text(encoding="utf-8"))
