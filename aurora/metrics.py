"""Prometheus metrics with the official client, in multi-process mode: every Aurora process on a
machine writes its counters into ``$AURORA_HOME/metrics`` (``PROMETHEUS_MULTIPROC_DIR``), and
``GET /metrics`` adds them up. Figures the database already knows (runs by goal and status, queue
depth, approvals waiting, adapter calls, federation lag) are read from it at scrape time, so they
are right whichever machine did the work.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)

_dir: Path | None = None
F = TypeVar("F", bound=Callable[..., None])


def prepare(home: Path, clear: bool = False, counting: bool = True) -> None:
    """Point this process (and its children) at the shared directory, before prometheus_client loads.

    ``counting``: this process counts (it loads prometheus_client now, so that the children a
    prefork worker forks share it instead of each loading its own). `aurora up`'s supervisor
    counts only a restart: it loads the client (with its HTTP server, ~3.5 MB) if one happens."""
    global _dir
    path = Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or home / "metrics")
    if clear and path.exists():
        shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    _dir = path
    if counting:
        _reserve_blocks()


#: bytes reserved for a new metrics file: its header and the first few dozen entries
FIRST_BLOCK = 4096
#: an entry's bytes beyond its key: length, padding to 8, value and timestamp (see mmap_dict)
ENTRY_OVERHEAD = 32


def _fallocate(fd: int, size: int) -> None:
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise
        # EINVAL/EOPNOTSUPP: a filesystem that cannot reserve; the hole stays, as before.


def _reserve_blocks() -> None:
    """prometheus_client grows its memory-mapped files with ``truncate``, which leaves a hole: on a
    full disk the first write into the hole is a SIGBUS that kills the whole process (a web
    process with all its threads, a worker in the middle of a run). Reserving the blocks an entry
    will occupy before it is written turns that into an ENOSPC, which the callers below count as
    a metric not counted. Only what is used is reserved: a file stays as small as before."""
    from prometheus_client import mmap_dict

    cls = mmap_dict.MmapedDict
    if getattr(cls, "_aurora_reserves", False):
        return
    original_init, original_init_value = cls.__init__, cls._init_value

    def __init__(self: Any, filename: str, read_mode: bool = False) -> None:
        if not read_mode:
            fd = os.open(filename, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                if os.fstat(fd).st_size == 0:  # new: its header is written at once
                    _fallocate(fd, FIRST_BLOCK)
            finally:
                os.close(fd)
        original_init(self, filename, read_mode)

    def _init_value(self: Any, key: str) -> None:
        _fallocate(self._f.fileno(), self._used + len(key.encode("utf-8")) + ENTRY_OVERHEAD)
        original_init_value(self, key)

    cls.__init__ = __init__
    cls._init_value = _init_value
    cls._aurora_reserves = True


def _never_fails(function: F) -> F:
    """Counting must never fail the work it counts (a full disk makes the metrics files fail)."""

    @functools.wraps(function)
    def wrapped(*args: Any, **kwargs: Any) -> None:
        try:
            function(*args, **kwargs)
        except OSError as exc:
            log.warning("a metric was not counted: %s", errno.errorcode.get(exc.errno or 0, exc.__class__.__name__))

    return wrapped  # type: ignore[return-value]


_lock = threading.Lock()
_made: dict[str, Any] = {}


def _metrics() -> dict[str, Any]:
    """The process's metric objects, made once even when many threads ask at the same moment
    (prometheus_client refuses to register a name twice)."""
    if _made:
        return _made
    with _lock:
        if not _made:
            _made.update(_create())
    return _made


def _create() -> dict[str, Any]:
    _reserve_blocks()  # done already unless prepare() was told this process would not count
    from prometheus_client import Counter, Histogram

    return {
        "requests": Counter("aurora_http_requests_total", "HTTP requests", ["method", "endpoint", "status"]),
        "request_seconds": Histogram("aurora_http_request_duration_seconds", "HTTP request duration", ["endpoint"],
                                     buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)),
        "run_seconds": Histogram("aurora_run_duration_seconds", "From submission to a final status",
                                 ["goal", "status", "mode"],
                                 buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 86400)),
        "rate_waits": Counter("aurora_rate_limit_waits_total", "Calls that waited for a rate limit", ["adapter"]),
        "rate_wait_seconds": Counter("aurora_rate_limit_wait_seconds_total", "Seconds waited for rate limits",
                                     ["adapter"]),
        "webhooks_rejected": Counter("aurora_webhooks_rejected_total", "Provider callbacks refused (forged, stale, "
                                     "malformed)", ["provider", "reason"]),
        "federation_rejected": Counter("aurora_federation_rejected_total", "What a peer sent that this node "
                                       "refused (pages over the limit, oversize events, slow answers, events claiming its own or an unknown "
                                       "origin, bad signatures, ...)",
                                       ["peer", "reason"]),
        "restarts": Counter("aurora_supervisor_restarts_total", "Children of `aurora up` started again after an "
                            "unexpected exit", ["process"]),
    }


def _enabled() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


#: (method, endpoint, status) -> the request counter and duration histogram of those labels:
#: ``labels()`` takes a lock and builds its key again on every call, once per request otherwise
_request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}


@_never_fails
def request_done(method: str, endpoint: str, status: int, seconds: float) -> None:
    if _enabled():
        children = _request_children.get((method, endpoint, status))
        if children is None:
            m = _metrics()
            children = (m["requests"].labels(method, endpoint, str(status)), m["request_seconds"].labels(endpoint))
            if len(_request_children) < 4096:  # the endpoints are the app's rules: a handful
                _request_children[(method, endpoint, status)] = children
        children[0].inc()
        children[1].observe(seconds)


@_never_fails
def run_finished(goal: str, status: str, seconds: float, mode: str = "none") -> None:
    """``mode``: live, simulated, or none (the run did not act): a simulated run must never be
    counted as if it had done the real thing."""
    if _enabled():
        _metrics()["run_seconds"].labels(goal, status, mode).observe(max(seconds, 0.0))


@_never_fails
def rate_limit_waited(adapter: str, seconds: float) -> None:
    if _enabled() and seconds > 0:
        m = _metrics()
        m["rate_waits"].labels(adapter).inc()
        m["rate_wait_seconds"].labels(adapter).inc(seconds)


@_never_fails
def webhook_rejected(provider: str, reason: str) -> None:
    # the reasons are a fixed set of sentences in aurora/webhooks.py, so the label stays bounded
    if _enabled():
        _metrics()["webhooks_rejected"].labels(provider, reason[:80]).inc()


@_never_fails
def federation_rejected(peer: str, reason: str, count: int = 1) -> None:
    # peers are the registered nodes and reasons a fixed set of words (federation/fetch.py REFUSALS)
    if _enabled():
        _metrics()["federation_rejected"].labels(peer, reason[:40]).inc(count)


def supervisor_restarted(process: str) -> None:
    if _enabled():
        _metrics()["restarts"].labels(process).inc()


class DatabaseCollector:
    """Gauges and counters read from the database at scrape time."""

    def __init__(self, runtime: Any):
        self.runtime = runtime

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        from . import tallies
        from .federation import registry

        db = self.runtime.db
        # no count over all history at each scrape: tallies kept from the logs (votes, keys: not calls)
        by_state, calls = tallies.read(db, self.runtime.settings.node_name)
        runs = GaugeMetricFamily("aurora_runs", "Runs by goal and status", labels=["goal", "status"])
        for goal, status, count in by_state:
            runs.add_metric([goal, status], count)
        yield runs
        queued = sum(count for _, status, count in by_state if status == "queued")
        yield GaugeMetricFamily("aurora_queue_depth", "Runs queued and not yet picked up", value=queued)
        waiting = sum(count for _, status, count in by_state if status == "awaiting_approval")
        yield GaugeMetricFamily("aurora_approvals_waiting", "Runs waiting for approvals", value=waiting)
        adapter_calls = CounterMetricFamily("aurora_adapter_calls", "Adapter calls (from the audit log)",
                                            labels=["adapter", "mode", "outcome"])
        for adapter, mode, outcome, count in calls:
            adapter_calls.add_metric([adapter, mode, outcome], count)
        yield adapter_calls
        interval = float(self.runtime.policies.current().federation["sync_interval"])
        lag = GaugeMetricFamily("aurora_federation_lag_events", "Events a peer has that this node has not pulled",
                                labels=["peer"])
        up = GaugeMetricFamily("aurora_federation_peer_healthy", "1 if the peer is healthy", labels=["peer"])
        for node in registry.listing(db, interval):
            lag.add_metric([node["name"]], node["lag"])
            up.add_metric([node["name"]], 1 if node["state"] == "healthy" else 0)
        yield lag
        yield up


def render(runtime: Any) -> tuple[bytes, str]:
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    if _enabled():
        MultiProcessCollector(registry)
    registry.register(DatabaseCollector(runtime))
    return generate_latest(registry), CONTENT_TYPE_LATEST


def process_exited(pid: int) -> None:
    """gunicorn's child_exit hook: drop the dead worker's live gauges."""
    if _enabled():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
