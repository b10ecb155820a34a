"""Logging: one line per request and per run step; JSON with ``AURORA_LOG_FORMAT=json``; the run id
on every line logged while a run is being worked on; secrets and tokens never written.

Redaction happens in a filter on the handler, so it covers every logger, Aurora's and the
libraries' alike: the configured secret values, API keys, federation tokens, bearer headers,
Stripe-style keys, and ``token=`` in query strings.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

#: the run the current thread works on
RUN_ID: ContextVar[str | None] = ContextVar("aurora_run_id", default=None)

# (pattern, keep): ``keep`` is the number of the group kept in front of "[REDACTED]" (0: none)
_PATTERNS = [
    (re.compile(r"aur_[0-9a-f]{12}_[A-Za-z0-9_\-]+"), 0),
    (re.compile(r"aurfed_[A-Za-z0-9_\-]+"), 0),
    (re.compile(r"(?i)\b(?:sk|rk)_(?:test|live)_[A-Za-z0-9]+"), 0),
    (re.compile(r"whsec_[A-Za-z0-9+/=]+"), 0),  # Stripe: letters and digits; Standard Webhooks: base64
    (re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?(?:bearer\s+|basic\s+)?)[^\s\"',}]+"), 1),
    (re.compile(r"(?i)(bearer\s+)[^\s\"',]+"), 1),
    (re.compile(r"(?i)([?&](?:access_)?token=)[^&\s\"']+"), 1),
]
_EXTRA_FIELDS = ("method", "path", "status", "duration_ms", "caller", "step", "mode", "reason", "attempt", "goal")


def redact_text(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, "[REDACTED]")
    for pattern, keep in _PATTERNS:
        text = pattern.sub((lambda m, k=keep: (m.group(k) if k else "") + "[REDACTED]"), text)
    return text


class Redact(logging.Filter):
    """Rewrites each record's message with every secret removed."""

    def __init__(self, secrets: Callable[[], list[str]]):
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string must not lose the line
            message = str(record.msg)
        values = self.secrets()
        record.msg, record.args = redact_text(message, values), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text, values)
        record.run_id = getattr(record, "run_id", None) or RUN_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if getattr(record, "run_id", None):
            line["run_id"] = record.run_id
        for key in _EXTRA_FIELDS:
            if hasattr(record, key):
                line[key] = getattr(record, key)
        if record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        run_id = getattr(record, "run_id", None)
        return f"{text} [run {run_id}]" if run_id and run_id not in text else text


#: the system's periodic tasks: beat sends each one every few seconds to minutes
ROUTINE_TASKS = frozenset(("aurora.sweep", "aurora.ingest_forms", "aurora.federation_sync", "aurora.audit_checkpoint"))


class Routine(logging.Filter):
    """Celery's lines about the periodic system tasks (beat sending one, the worker receiving it,
    its success) are DEBUG: three lines each sweep interval said nothing. A task that did something
    says so in a line of its own (``sweeper sent 2 run(s) again``); a failure stays an ERROR."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or not record.name.startswith("celery."):
            return True
        data = getattr(record, "data", None)
        if isinstance(data, dict):  # celery.app.trace and celery.worker.strategy pass the task's context
            routine = data.get("name") in ROUTINE_TASKS and "exc" not in data
        else:
            message = record.getMessage()
            routine = record.name == "celery.beat" and message.startswith("Scheduler: Sending due task") \
                and message.rstrip(")").rsplit("(", 1)[-1] in ROUTINE_TASKS
        if not routine:
            return True
        if not logging.getLogger().isEnabledFor(logging.DEBUG):
            return False
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


_redactor: Redact | None = None


def configure(secrets: Callable[[], list[str]], level: str | None = None) -> None:
    """Redact every log record as it is made (so every handler gets the clean one), and install
    Aurora's handler on the root logger; once per process."""
    global _redactor
    if _redactor is None:
        _redactor = Redact(secrets)
        make_record = logging.getLogRecordFactory()

        def redacted_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = make_record(*args, **kwargs)
            _redactor.filter(record)  # type: ignore[union-attr]
            return record

        logging.setLogRecordFactory(redacted_record)
    else:
        _redactor.secrets = secrets
    root = logging.getLogger()
    if level:
        root.setLevel(level.upper())
    if any(getattr(h, "_aurora", False) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler._aurora = True  # type: ignore[attr-defined]
    handler.addFilter(Routine())
    if os.environ.get("AURORA_LOG_FORMAT", "text").lower() == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level or os.environ.get("AURORA_LOG_LEVEL", "INFO").upper())
    logging.getLogger("urllib3").setLevel(logging.WARNING)
