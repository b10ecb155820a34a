"""The core imports neither Flask nor Celery: it must run (and be tested) without either. The
processes of the stack load only what they use."""

from __future__ import annotations

import importlib
import os
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


#: what a process that runs as long as the stack may not carry: another command's module, an HTTP
#: library it never uses, Celery's command line (an interactive shell's libraries), Flask in
#: gunicorn's master, PostgreSQL's dialect on SQLite; each is several MB in every process of the
#: stack (docs/benchmarks.md, memory)
_LONG_RUNNING = {
    "supervisor (aurora up)": ("main.get_command(click.Context(main), 'up')\nimport aurora.stack, aurora.banner\n"
                               "import os, aurora.metrics, aurora.cli.stack as s\n"
                               "aurora.metrics.prepare(__import__('pathlib').Path(os.environ['AURORA_HOME']), counting=False)\n"
                               "s._answers('127.0.0.1', 9)",
                               ("aurora.cli.workflows", "aurora.cli.admin", "aurora.client", "requests",
                                "prometheus_client", "urllib.request")),
    "worker (aurora worker)": ("main.get_command(click.Context(main), 'worker')\n"
                               "import aurora.celery_app, aurora.tasks, aurora.worker_start, celery.apps.worker"
                               "\nimport aurora.federation.sync, aurora.federation.registry",
                               ("aurora.cli.workflows", "aurora.client", "requests", "celery.bin", "click_repl",
                                "sqlalchemy.dialects.postgresql")),
    # requests comes with the first page fetched from a peer (aurora/federation/wire.py)
    "web (aurora up's, on SQLite)": ("import aurora.web.server, aurora.web.asgi, aurora.federation.registry",
                                     ("requests", "urllib3", "gunicorn", "uvicorn_worker", "sqlalchemy.dialects.postgresql",
                                      "aurora.cli.workflows")),
    "gunicorn's master": ("import aurora.gunicorn_conf, aurora.web.worker", ("flask", "aurora.config", "aurora.runtime")),
}


def test_what_runs_as_long_as_the_stack_loads_only_what_it_uses(tmp_path) -> None:
    for process, (imports, refused) in _LONG_RUNNING.items():
        code = (f"import sys, click\nfrom aurora.cli import main\n{imports}\n"
                f"print(sorted({{m.split('.')[0] if m.startswith('requests') else m for m in sys.modules\n"
                f"               if m.startswith({refused!r})}}))")
        out = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, check=True,
                             env={**os.environ, "AURORA_HOME": str(tmp_path)}).stdout
        assert out.strip() == "[]", f"{process} loads {out.strip()}"


def test_each_command_is_found_in_the_module_that_defines_it() -> None:
    from aurora.cli import _common, main

    for module in set(_common.COMMAND_MODULES.values()):
        importlib.import_module(f"aurora.cli.{module}")
    defined = {name: command.callback.__module__.rsplit(".", 1)[-1] for name, command in main.commands.items()}
    assert defined == _common.COMMAND_MODULES
