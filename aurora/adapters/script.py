"""Running an adapter's file as a script: ``python3 aurora/adapters/stripe_adapter.py``.

A file run as a script has no package, so its relative imports fail, and its folder (which
holds ``http.py``) would shadow the standard library. Each adapter's ``__main__`` bootstrap puts
the repository root first on ``sys.path`` and calls :func:`rerun`, which executes the module the
proper way (``python -m aurora.adapters.<name>``) with an interpreter that has Aurora's
dependencies: this one, or the repository's ``.venv`` (``make install``). Standard library only.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _python() -> str | None:
    if importlib.util.find_spec("sqlalchemy") and importlib.util.find_spec("jsonschema"):
        return sys.executable
    venv = ROOT / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else None


def rerun(module: str) -> None:
    """Replace this process with ``python -m MODULE``; never returns."""
    python = _python()
    if python is None:
        sys.stderr.write(f"aurora: this Python ({sys.executable}) lacks Aurora's dependencies; run `make install`,"
                         f" then: .venv/bin/python -m {module}\n")
        raise SystemExit(2)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    os.execve(python, [python, "-m", module, *sys.argv[1:]], env)
