"""The policy file (``batch8_policy.json``): load, validate, reload; answers safety questions.

A :class:`PolicyStore` re-reads the file when its modification time changes (checked at most
once a second), so an edit reaches every web and worker process without a restart. A broken
edit is refused: the last good policy still answers (submissions, pages, ``/health``) and
:attr:`PolicyStore.last_error` says why, but no run acts on it while the file holds the refused
edit (``aurora.blocking.usable``: fail closed, the file no longer says that policy).
At start there is no last good policy, so a broken file makes ``current()`` raise
:class:`PolicyError` (until the file is fixed): start-up checks stop on it, and a run a worker
cannot decide without a policy is blocked, visibly (``aurora.blocking``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from .errors import PolicyError
from .resources import load_schema
from .schema_patterns import Validator

log = logging.getLogger(__name__)

#: the ceiling of a charge where the policy names none: a typo of a few zeros must not go through
DEFAULT_MAX_AMOUNT = {"*": "10000"}
#: how often, at most, the file's modification time is looked at (seconds)
RELOAD_CHECK_INTERVAL = 1.0


@cache
def _validator() -> Draft202012Validator:
    return Validator(load_schema("policy.schema.json"))


def _where(error: Any) -> str:
    parts = [str(p) for p in error.absolute_path]
    if error.validator == "additionalProperties":
        known = error.schema.get("properties", {})
        unknown = [k for k in error.instance if k not in known]
        key = ".".join([*parts, unknown[0]]) if unknown else ".".join(parts)
        return f"{key}: unknown key (allowed: {', '.join(sorted(known))})"
    return f"{'.'.join(parts) or '(top level)'}: {error.message}"


@dataclass(frozen=True)
class Policy:
    """One validated policy. Accessors give the safe default when a section is absent."""

    data: dict[str, Any]
    version: str
    #: SHA-256 of the file's bytes as read (``sha256sum`` of the file gives the same)
    sha256: str = ""

    @property
    def dry_run(self) -> bool:
        return bool(self.data["dry_run"])

    @property
    def quorum_for_critical(self) -> int:
        return int(self.data.get("security", {}).get("require_quorum_for_critical", 2))

    @property
    def canary_percent(self) -> int:
        return int(self.data.get("security", {}).get("canary_percent", 10))

    @property
    def approval_timeout_seconds(self) -> float:
        return float(self.data.get("approvals", {}).get("timeout_hours", 72)) * 3600

    @property
    def routing(self) -> dict[str, Any]:
        return self.data.get("ki_routing", {"enabled": False, "rules": []})

    @property
    def auto_rollback(self) -> bool:
        return bool(self.data.get("security", {}).get("auto_rollback_on_failure", True))

    @property
    def federation(self) -> dict[str, Any]:
        """``federation`` settings with their defaults, plus the seed's two switches."""
        return {"sync_interval": 600, "page_size": 500, "max_pages": 200, "timeout_seconds": 10,
                "pass_timeout_seconds": 300,
                "backoff_max_seconds": 3600, "lease_seconds": 60, **self.data.get("federation", {}),
                "enabled": bool(self.data.get("federation_enabled", False)),
                "nodes": list(self.data.get("federation_nodes", []))}

    def adapter(self, name: str) -> dict[str, Any]:
        """The ``adapters.<name>`` section (empty if absent)."""
        return dict(self.data.get("adapters", {}).get(name, {}))

    def max_charge(self, currency: str) -> Decimal:
        """The ceiling of one charge in ``currency`` (``adapters.stripe.max_amount``)."""
        ceilings = {**DEFAULT_MAX_AMOUNT, **self.adapter("stripe").get("max_amount", {})}
        return Decimal(ceilings.get(currency.upper(), ceilings["*"]))

    def required_approvals(self, critical: bool, require_approval: bool) -> int:
        """How many distinct approvals a run needs before it may act."""
        if critical:
            return max(self.quorum_for_critical, 1)
        return 1 if require_approval else 0


def parse_policy(text: str, source: str = "policy") -> Policy:
    """Validate policy JSON text; raise :class:`PolicyError` naming the offending key."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PolicyError(f"{source}: not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    errors = sorted(_validator().iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        raise PolicyError(f"{source}: " + "; ".join(_where(e) for e in errors))
    rules = data.get("ki_routing", {}).get("rules", [])
    engines = [rule["engine"] for rule in rules]
    if len(engines) != len(set(engines)):
        raise PolicyError(f"{source}: ki_routing.rules: each engine may have one rule only")
    version = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]
    return Policy(data=data, version=version, sha256=hashlib.sha256(text.encode("utf-8")).hexdigest())


class PolicyStore:
    """The current policy of one process, reloaded when the file changes."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.last_error: str | None = None
        self._lock = threading.Lock()
        self._checked_at = 0.0
        self._watcher_pid = 0
        # Called (old, new) after each reload to a new version, outside the lock: the runtime puts
        # the reload into the audit chain (policy_ledger), which this module knows nothing of.
        self.listeners: list[Callable[[Policy | None, Policy], None]] = []
        self._mtime = self._stat()
        # A broken file at start leaves no good policy: ``current()`` raises until it is fixed
        # (start-up checks call it and stop; a worker's runs are blocked, aurora.blocking).
        self._policy: Policy | None = None
        try:
            self._policy = self._read()
        except PolicyError as exc:
            self.last_error = str(exc)

    def _stat(self) -> float | None:
        try:
            return self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return None

    def _read(self) -> Policy:
        try:
            mode = self.path.stat().st_mode
            # The file is hot-reloaded: whoever may write it may switch payments live.
            if mode & (stat.S_IWGRP | stat.S_IWOTH):
                raise PolicyError(f"{self.path} is writable by group or others (mode {stat.S_IMODE(mode):03o}); "
                                  f"run: chmod go-w {self.path}")
            raw = self.path.read_bytes()
        except OSError as exc:
            raise PolicyError(f"{self.path}: cannot read the policy file: {exc.strerror}") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PolicyError(f"{self.path}: not UTF-8 (invalid byte at offset {exc.start})") from None
        # the hash of the bytes on disk, so that the audit record's matches ``sha256sum`` of the file
        return replace(parse_policy(text, str(self.path)), sha256=hashlib.sha256(raw).hexdigest())

    def current(self) -> Policy:
        """The policy in force, re-read first if the file changed since the last look."""
        if self._watcher_pid != os.getpid():
            self._start_watcher()
        if self._policy is None or time.monotonic() - self._checked_at >= RELOAD_CHECK_INTERVAL:
            self._check()
        if self._policy is None:
            raise PolicyError(self.last_error or f"{self.path}: no policy loaded")
        return self._policy

    def fresh(self) -> bool:
        """Whether :meth:`current` would answer from memory now, without looking at the file."""
        return (self._policy is not None and self._watcher_pid == os.getpid()
                and time.monotonic() - self._checked_at < RELOAD_CHECK_INTERVAL)

    def _start_watcher(self) -> None:
        """Look at the file every second in the background too, so that a process that serves no
        request for a while still follows every good edit (and is not left on an old policy when
        a later edit is broken)."""
        self._watcher_pid = os.getpid()

        def watch() -> None:
            while True:
                time.sleep(RELOAD_CHECK_INTERVAL)
                try:
                    self._check()
                except Exception:  # noqa: BLE001 - the watcher must outlive any surprise
                    log.exception("policy watcher failed")

        threading.Thread(target=watch, name="policy-watcher", daemon=True).start()

    def _check(self) -> None:
        changed = self._reload()
        if changed is not None:
            for listen in list(self.listeners):
                listen(*changed)

    def _reload(self) -> tuple[Policy | None, Policy] | None:
        """Re-read a changed file; the (old, new) policies when the version moved."""
        with self._lock:
            self._checked_at = time.monotonic()
            mtime = self._stat()
            # A refused edit is looked at again each time: it may have been read half-written.
            if mtime == self._mtime and self.last_error is None and self._policy is not None:
                return None
            self._mtime = mtime
            try:
                policy = self._read()
            except PolicyError as exc:
                if str(exc) != self.last_error and self._policy is not None:
                    log.error("policy edit refused, keeping version %s: %s", self._policy.version, exc)
                self.last_error = str(exc)
                return None
            self.last_error = None
            if self._policy is None or policy.version != self._policy.version:
                old, self._policy = self._policy, policy
                log.info("policy reloaded from %s (version %s)", self.path, policy.version)
                return old, policy
            return None
