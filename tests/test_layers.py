"""The core imports neither Flask nor Celery: it must run (and be tested) without either."""

from __future__ import annotations

import subprocess
import sys

CORE = ["aurora.documents", "aurora.policy", "aurora.gates", "aurora.router", "aurora.engine", "aurora.pipeline",
        "aurora.run_sql", "aurora.events", "aurora.audit", "aurora.approvals", "aurora.adapters.registry",
        "aurora.binding", "aurora.ledger", "aurora.people", "aurora.keys"]


def test_the_core_imports_neither_flask_nor_celery() -> None:
    code = (f"import importlib, sys\nfor name in {CORE!r}: importlib.import_module(name)\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'flask', 'celery', 'kombu'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
