"""The web's ASGI app, ``aurora.web.asgi:app`` (for gunicorn's worker and aurora/web/server.py): Flask
behind a waiting layer.

Flask answers every request, in a pool of threads (a2wsgi), as under gunicorn's threaded
worker. Three kinds of request may have to wait for a run, and waiting there would hold a thread
(and, worse, make the pool too small for everyone else), so this layer waits for them on the
event loop instead, without a thread or a database connection (docs/architecture.md, "Waiting"):

- ``POST /workflows`` with ``Prefer: wait=N`` (RFC 7240) or ``?wait=N``: Flask submits; the answer
  is the run's summary with its result and error once it is final, waits for approval or is
  blocked, or after N seconds as it is then; ``Preference-Applied: wait=N`` says the wait was
  honoured.
- ``GET /workflows/<id>?wait=N``: the run once it differs from the version the client names in
  ``If-None-Match`` (default: the one it has when the request arrives), at once if it is final.
- ``GET /workflows/<id>/stream`` and ``/ui/runs/<id>/stream``: server-sent events, kept open and
  fed as the run changes until it ends (aurora/web/streaming.py).

When the server begins to stop, every waiter answers at once, without a request to Flask each
(thousands may be waiting): a submitter with the run as it is then (one indexed read), a long
poll as at its deadline, an event stream with its end. Each client then asks again — a long poll
with its ETag, a stream after its last event — of a server that is there again: nothing is missed.

The layer decides only *when* to ask Flask: each answer, and each read after a change, is an
ordinary Flask request with the client's own credentials, in the thread pool — but for the
submitter's outcome, one indexed read of the run it has just been allowed to submit.

Where Flask answers: in the pool, but for the KI-router (``POST /route``, ``GET /route/rules``)
when its answer needs nothing but memory — the caller's key was verified a moment ago
(aurora/keys.py remembers it) and the policy was looked at within the last second. Flask then
answers on the event loop's own thread: the same app, auth, log line and metrics, without the
hand-over to a pool thread and back (two thread wake-ups, ~0.2-0.3 ms of CPU measured, as much as
the decision's own work; docs/benchmarks.md). The loop is held only for that CPU work, which a
pool thread would hold the GIL for all the same; anything that may wait (a key to read, a policy
to re-read) goes to the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
import time
from typing import Any

from a2wsgi import WSGIMiddleware
from a2wsgi.wsgi import build_environ
from werkzeug.test import run_wsgi_app

from .. import keys
from . import create_app
from .hub import Hub
from .streaming import FINAL, FOLLOW

#: the longest wait a request may ask for (seconds); a longer one is cut to this
MAX_WAIT = 60
#: threads that run Flask (``--threads`` sets it, through gunicorn's worker or aurora/web/server.py)
DEFAULT_THREADS = 8
#: seconds between re-reads of a waited-for run when notes flow (a lost note costs at most this)
RECHECK = 20.0
#: ... and when they do not (no Redis subscription, a broker without notes)
RECHECK_UNNOTIFIED = 1.0
#: seconds between two keep-alive comments on an idle event stream
KEEPALIVE = 15.0
#: statuses a submitter waits for: the run ended, or it needs people now
SETTLED = FINAL | {"awaiting_approval"}

#: requests Flask answers on the event loop when they need nothing but memory (see above)
ON_THE_LOOP = frozenset({("POST", "/route"), ("GET", "/route/rules")})
#: ... and when the caller's key stays remembered at least this much longer (s): never read on the loop
KEY_MARGIN = 0.1

_RUN = re.compile(r"^/workflows/([^/]+)$")
_STREAM = re.compile(r"^/(?:workflows|ui/runs)/([^/]+)/stream$")
_PREFER_WAIT = re.compile(r"(?:^|[,;])\s*wait\s*=\s*\"?([^\s,;\"]*)\"?", re.IGNORECASE)


class BadWait(ValueError):
    pass


def parse_wait(raw: str, where: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise BadWait(f"{where}: {raw[:20]!r} is not a whole number of seconds") from None
    if value < 0:
        raise BadWait(f"{where}: must be 0 or more seconds")
    return min(value, MAX_WAIT)


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin1")
    return None


def _query_wait(scope: dict[str, Any]) -> str | None:
    from urllib.parse import parse_qs

    values = parse_qs(scope.get("query_string", b"").decode("latin1")).get("wait")
    return values[-1] if values else None


def requested_wait(scope: dict[str, Any]) -> tuple[str, int] | None:
    """("prefer" | "query", seconds) when the request asks to wait; raises BadWait."""
    query = _query_wait(scope)
    if query is not None:
        return "query", parse_wait(query, "wait")
    prefer = _header(scope, b"prefer")
    if prefer and (found := _PREFER_WAIT.search(prefer)):
        return "prefer", parse_wait(found.group(1), "Prefer: wait")
    return None


class Answer:
    """One Flask answer, whole."""

    def __init__(self, status: str, headers: list[tuple[str, str]], body: bytes):
        self.code = int(status.split(" ", 1)[0])
        self.headers, self.body = headers, body

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((v for k, v in self.headers if k.lower() == lowered), None)

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None


def version(run: dict[str, Any]) -> str:
    """What changes whenever the run does: every change appends an event (the outbox)."""
    timeline = run.get("timeline") or []
    return f"{timeline[-1]['seq'] if timeline else 0}.{run.get('status')}"


class WaitingApp:
    def __init__(self, flask_app: Any, threads: int = DEFAULT_THREADS):
        self.flask = flask_app
        self.settings = flask_app.extensions["aurora"].settings
        self.max_body = flask_app.config.get("MAX_CONTENT_LENGTH") or 1 << 20
        self.threads = threads
        self._wsgi: WSGIMiddleware | None = None
        self._hub: Hub | None = None
        #: the server is stopping: no request waits any more (see the module's docstring)
        self.stopping = False

    def configure(self, threads: int) -> None:
        """Before the first request: the size of Flask's thread pool."""
        self.threads = max(1, threads)

    @property
    def wsgi(self) -> WSGIMiddleware:
        if self._wsgi is None:
            self._wsgi = WSGIMiddleware(self.flask, workers=self.threads)
        return self._wsgi

    async def hub(self) -> Hub:
        if self._hub is None:
            self._hub = Hub(self.settings)
        await self._hub.start()
        return self._hub

    def stop_waiting(self) -> None:
        """The server begins to stop (aurora/web/protocol.py): no request waits any more, those
        waiting now included — and those still arriving (a submitter whose body is on its way)."""
        if not self.stopping:
            self.stopping = True
            if self._hub is not None:
                self._hub.wake_all()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            method, path = scope["method"], scope["path"]
            try:
                if method == "POST" and path == "/workflows" and (wait := requested_wait(scope)):
                    return await self._submit(scope, receive, send, wait)
                if method == "GET" and _RUN.match(path) and (wait := requested_wait(scope)):
                    return await self._poll(scope, receive, send, wait[1], _RUN.match(path).group(1))  # type: ignore[union-attr]
                if method == "GET" and (found := _STREAM.match(path)):
                    return await self._stream(scope, receive, send, found.group(1))
            except BadWait as exc:
                return await _send_json(send, 400, {"error": "bad_parameter", "message": str(exc)})
            # Everything else: the whole request to Flask in one hand-over to the pool and one back.
            # (a2wsgi's streaming bridge hands every part of a response over on its own: measured
            # ~1.5x the server CPU of gunicorn's threaded worker per POST /route; no answer of
            # Aurora's streams, but the event streams above.)
            body = await _read_body(receive, self.max_body)
            if (method, path) in ON_THE_LOOP and self.from_memory(scope):
                return await _send(send, self.answer(scope, body))
            return await _send(send, await self.ask(scope, body))
        await self.wsgi(scope, receive, send)

    # -- asking Flask ----------------------------------------------------------------------

    def answer(self, scope: dict[str, Any], body: bytes) -> Answer:
        """Flask's whole answer to one request, in the calling thread."""
        environ = build_environ(scope, io.BytesIO(body))  # type: ignore[arg-type]
        app_iter, status, headers = run_wsgi_app(self.flask, environ, buffered=True)
        try:
            data = b"".join(app_iter)
        finally:
            if hasattr(app_iter, "close"):
                app_iter.close()
        return Answer(status, list(headers.items()), data)

    async def ask(self, scope: dict[str, Any], body: bytes = b"", **changes: Any) -> Answer:
        """Flask's answer to this request (or to it with ``changes`` to its scope), in the pool."""
        scope = {**scope, **changes}
        return await asyncio.get_running_loop().run_in_executor(self.wsgi.executor, self.answer, scope, body)

    def from_memory(self, scope: dict[str, Any]) -> bool:
        """Whether Flask can answer this request without waiting for anything: the bearer key is
        one this process verified lately (not an admin's: those are read every time) and the
        policy needs no look at its file."""
        presented = [value for name, value in scope.get("headers", ()) if name == b"authorization"]
        if len(presented) != 1:  # (two would reach Flask joined into one key nobody verified)
            return False
        scheme, _, key = presented[0].decode("latin1").partition(" ")
        runtime = self.flask.extensions["aurora"]
        return (scheme.lower() == "bearer" and keys.remembered(runtime.db, key.strip(), KEY_MARGIN)
                and runtime.policies.fresh())

    async def outcome(self, run_id: str) -> dict[str, Any] | None:
        """What a submitter waits for: the run's summary with its result and error, from one
        indexed read (the caller was authenticated by its submit a moment ago).

        Read on the event loop itself when a pooled connection is idle: the read takes a tenth
        of a millisecond or two, and the hand-over to a pool thread and back cost as much again
        (two thread wake-ups, on the path every waiting submitter takes once its run is done).
        Without an idle connection it is read in the pool, so that the loop never waits for one."""
        from .. import runs as run_views

        db = self.flask.extensions["aurora"].db

        def read() -> dict[str, Any] | None:
            with db.read_rows() as connection:
                return run_views.outcome(connection, run_id)

        if db.reader_idle():
            return read()
        return await asyncio.get_running_loop().run_in_executor(self.wsgi.executor, read)

    async def _read_run(self, scope: dict[str, Any], run_id: str) -> dict[str, Any] | None:
        """The run as ``GET /workflows/<id>`` shows it, asked of Flask with the caller's credentials."""
        answer = await self.ask(self._get_run_scope(scope, run_id))
        run = answer.json()
        return run if answer.code == 200 and isinstance(run, dict) else None

    def _get_run_scope(self, scope: dict[str, Any], run_id: str) -> dict[str, Any]:
        return {**scope, "method": "GET", "path": f"/workflows/{run_id}", "raw_path": f"/workflows/{run_id}".encode(),
                "query_string": b"", "headers": [(k, v) for k, v in scope.get("headers", ())
                                                 if k in (b"authorization", b"cookie", b"host", b"user-agent")]}

    # -- the three waits -------------------------------------------------------------------

    async def _submit(self, scope: dict[str, Any], receive: Any, send: Any, wait: tuple[str, int]) -> None:
        body = await _read_body(receive, self.max_body)
        hub = await self.hub()  # subscribed before the run exists: no note of it can be missed
        started = time.monotonic()
        answer = await self.ask(scope, body)
        run = answer.json()
        if answer.code not in (200, 201) or not isinstance(run, dict) or "id" not in run:
            return await _send(send, answer)
        extra = {k: run[k] for k in ("links", "warning") if k in run}
        headers = [(k, v) for k, v in answer.headers if k.lower() not in ("content-length", "content-type")]
        if wait[0] == "prefer":
            headers.append(("Preference-Applied", f"wait={wait[1]}"))
        deadline = started + wait[1]
        with hub.watch(run["id"]) as watch:
            latest = None
            if not _settled(run):
                seen = hub.seen(run["id"]) or []
                if any(_settles(t) for t in seen):
                    watch.event.set()
                latest = await self._until(hub, watch, deadline, lambda: self.outcome(run["id"]), _settled,
                                           settles_only=True)
        if latest is None:  # the deadline passed without a read: read once, for the state now
            latest = await self.outcome(run["id"])
        await _send_json(send, answer.code, {**(latest or run), **extra}, headers)

    async def _poll(self, scope: dict[str, Any], receive: Any, send: Any, seconds: int, run_id: str) -> None:
        hub = await self.hub()
        deadline = time.monotonic() + seconds
        with hub.watch(run_id) as watch:
            answer = await self.ask(scope, query_string=b"")
            run = answer.json()
            if answer.code != 200 or not isinstance(run, dict):
                return await _send(send, answer)
            wanted = (_header(scope, b"if-none-match") or "").strip().strip('"') or version(run)
            if version(run) == wanted and run.get("status") not in FINAL:
                latest = await self._until(hub, watch, deadline, lambda: self._read_run(scope, run_id),
                                           lambda r: version(r) != wanted)
                if latest is not None:
                    run = latest
        await _send_json(send, 200, run, [("ETag", f'"{version(run)}"')])

    async def _until(self, hub: Hub, watch: Any, deadline: float, read: Any, done: Any,
                     settles_only: bool = False) -> dict[str, Any] | None:
        """Wait for notes of the run, reading it (``await read()``) after each, until ``done(run)``
        or the deadline; the last run read (None when none was read)."""
        latest = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return latest
            if self.stopping:  # as at the deadline: the caller answers with what it has
                return latest
            recheck = RECHECK if hub.healthy else RECHECK_UNNOTIFIED
            woken = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(watch.event.wait(), min(remaining, recheck))
                woken = True
            types = watch.take()
            if self.stopping:
                return latest
            if woken and settles_only and types and not any(_settles(t) for t in types):
                continue  # a step along the way (running, …): nothing a submitter waits for
            if not woken and remaining <= recheck:
                return latest  # the deadline: the caller answers with what it has or reads once more
            run = await read()
            if run is None:
                return latest
            latest = run
            if done(run):
                return run

    async def _stream(self, scope: dict[str, Any], receive: Any, send: Any, run_id: str) -> None:
        hub = await self.hub()
        with hub.watch(run_id) as watch:
            answer = await self.ask(scope)
            follow = answer.header(FOLLOW)
            if answer.code != 200 or not follow:
                return await _send(send, answer)
            headers = [(k, v) for k, v in answer.headers if k.lower() not in ("content-length", FOLLOW.lower())]
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(k.encode("latin1"), v.encode("latin1")) for k, v in headers]})
            await send({"type": "http.response.body", "body": answer.body, "more_body": True})
            gone = asyncio.ensure_future(_disconnected(receive))
            try:
                while follow and not self.stopping:
                    last = follow.split(" ")[1]
                    waiter = asyncio.ensure_future(watch.event.wait())
                    recheck = RECHECK if hub.healthy else RECHECK_UNNOTIFIED
                    done, _ = await asyncio.wait({waiter, gone}, timeout=min(KEEPALIVE, recheck),
                                                 return_when=asyncio.FIRST_COMPLETED)
                    waiter.cancel()
                    if gone in done:
                        return
                    if waiter not in done and not watch.types and hub.healthy:
                        await send({"type": "http.response.body", "body": b": keep-alive\n\n", "more_body": True})
                        continue
                    watch.take()
                    headers_now = [(k, v) for k, v in scope.get("headers", ()) if k != b"last-event-id"]
                    answer = await self.ask(scope, headers=[*headers_now, (b"last-event-id", last.encode())])
                    if answer.code != 200:
                        break
                    follow = answer.header(FOLLOW)
                    if answer.body:
                        await send({"type": "http.response.body", "body": answer.body, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            finally:
                gone.cancel()


def _settled(run: dict[str, Any]) -> bool:
    """Whether a submitter waits no longer: the run ended, waits for people, or is blocked."""
    return run.get("status") in SETTLED or bool(run.get("blocked"))


def _settles(event_type: str) -> bool:
    return event_type == "run.blocked" or (event_type.startswith("run.") and event_type[4:] in SETTLED)


async def _disconnected(receive: Any) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _read_body(receive: Any, limit: int) -> bytes:
    """The request body, or its first ``limit + 1`` bytes (Flask then refuses it as too large)."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        if size <= limit:
            chunks.append(chunk)
            size += len(chunk)
        if not message.get("more_body"):
            break
    return b"".join(chunks)


async def _send(send: Any, answer: Answer) -> None:
    await send({"type": "http.response.start", "status": answer.code,
                "headers": [(k.encode("latin1"), v.encode("latin1")) for k, v in answer.headers
                            if k.lower() != FOLLOW.lower()]})
    await send({"type": "http.response.body", "body": answer.body})


async def _send_json(send: Any, code: int, body: Any, headers: list[tuple[str, str]] | None = None) -> None:
    data = json.dumps(body).encode()
    head = [(k, v) for k, v in headers or [] if k.lower() not in ("content-length", "content-type")]
    head += [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    await send({"type": "http.response.start", "status": code,
                "headers": [(k.encode("latin1"), v.encode("latin1")) for k, v in head]})
    await send({"type": "http.response.body", "body": data})


app = WaitingApp(create_app())
