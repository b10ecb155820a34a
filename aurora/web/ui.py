"""The approval page: server-rendered, no build step. Sign in with an API key (throttled per
client and per key id); the signed session cookie holds only a random session id, kept
server-side (``websessions``), so logout and key revocation end it. CSRF tokens on every form,
never framed (``frame-ancestors 'none'``), readable on a phone, in German or English (the words
are in ``wording`` and the templates; the catalogues in ``translations/``)."""

from __future__ import annotations

import os
import secrets as random_secrets
from datetime import timedelta
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, current_app, flash, g, redirect, render_template, request, session, url_for
from flask.sessions import SecureCookieSessionInterface
from flask_babel import Babel, get_locale, gettext
from flask_wtf.csrf import CSRFError, CSRFProtect
from sqlalchemy import select

from .. import approvals, keys, websessions
from .. import runs as run_views
from ..errors import AuroraError, AuthError
from ..models import Role, Run, RunStatus
from . import wording
from .signin import SignInThrottle

bp = Blueprint("ui", __name__, url_prefix="/ui", template_folder="templates")
csrf = CSRFProtect()
babel = Babel()
#: the page's languages, the first the default; the catalogues are in aurora/web/translations
LANGUAGES = ("en", "de")
#: the cookie that keeps a language chosen with the page's link (it overrides Accept-Language)
LANGUAGE_COOKIE = "aurora_lang"
TRANSLATIONS = Path(__file__).resolve().parent / "translations"


def select_locale() -> str:
    """The page's language: the one chosen with its link, else the browser's (Accept-Language).
    The JSON API stays in English."""
    if not request.path.startswith("/ui"):
        return LANGUAGES[0]
    chosen = request.cookies.get(LANGUAGE_COOKIE)
    if chosen in LANGUAGES:
        return chosen
    return request.accept_languages.best_match(LANGUAGES) or LANGUAGES[0]


def secret_key(home: Path) -> str:
    """``AURORA_SECRET_KEY``, or a random key made once and kept in ``$AURORA_HOME/web_secret`` (0600)."""
    if os.environ.get("AURORA_SECRET_KEY"):
        return os.environ["AURORA_SECRET_KEY"]
    path = home / "web_secret"
    home.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(random_secrets.token_urlsafe(48))
    except FileExistsError:
        pass
    return path.read_text().strip()


class PageSessions(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, for the pages only: the API authenticates each call by its
    key and never reads a session, and opening one (a new signing serializer, the cookie's
    signature) cost every API call ~0.3 ms, ~8 % of ``POST /route``."""

    _serializers: dict[Any, Any] = {}

    def get_signing_serializer(self, app: Flask) -> Any:
        key = (app.secret_key, tuple(app.config.get("SECRET_KEY_FALLBACKS") or ()))
        serializer = self._serializers.get(key)
        if serializer is None:
            serializer = self._serializers[key] = super().get_signing_serializer(app)
        return serializer

    def open_session(self, app: Flask, request: Any) -> Any:
        if not request.path.startswith(bp.url_prefix or "/ui"):
            return self.null_session_class()
        return super().open_session(app, request)


#: the headers every answer carries unless it set them itself
NEVER_FRAMED = (("Content-Security-Policy", "frame-ancestors 'none'"), ("X-Frame-Options", "DENY"),
                ("X-Content-Type-Options", "nosniff"))


def init_app(app: Flask, home: Path) -> None:
    app.secret_key = secret_key(home)
    app.session_interface = PageSessions()
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=os.environ.get("AURORA_COOKIE_SECURE") == "1",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=8),
        WTF_CSRF_TIME_LIMIT=None,
    )
    csrf.init_app(app)
    babel.init_app(app, locale_selector=select_locale, default_translation_directories=str(TRANSLATIONS))
    app.register_blueprint(bp)

    @app.after_request
    def never_framed(response):  # type: ignore[no-untyped-def]
        # A framed page let a click inside an invisible frame cast a vote (clickjacking): no page
        # or API answer of Aurora may be shown inside another site's frame.
        # (werkzeug's Headers.setdefault raises and catches an exception for each header that is
        # missing: three of them cost more than the rest of an API answer's headers)
        present = {name.lower() for name in response.headers.keys()}
        response.headers.extend([(name, value) for name, value in NEVER_FRAMED if name.lower() not in present])
        return response

    @app.get("/")
    def root():  # type: ignore[no-untyped-def]
        return redirect(url_for("ui.index"))

    @app.errorhandler(CSRFError)
    def csrf_failed(exc: CSRFError):  # type: ignore[no-untyped-def]
        if request.path.startswith("/ui"):
            return render_template("message.html", title=gettext("Form expired"),
                                   message=gettext("The form was too old or not from this page. "
                                                   "Please try again.")), 400
        return {"error": "csrf", "message": exc.description}, 400


@bp.app_template_filter("when")
def when(value: str | None) -> str:
    """``2026-11-28T20:21:32.600414+00:00`` -> ``2026-11-28 20:21 UTC``."""
    return f"{value[:10]} {value[11:16]} UTC" if value else "—"


@bp.app_context_processor
def words() -> dict[str, Any]:
    """What every page's template may use to speak to a person (aurora/web/wording.py)."""
    locale = str(get_locale() or LANGUAGES[0]) if request.path.startswith("/ui") else LANGUAGES[0]
    return {"money": wording.money, "status_name": wording.status_name, "event_name": wording.event_name,
            "what": wording.what, "outcome": wording.outcome, "approvals_line": wording.approvals_line,
            "vote_message": wording.vote_message, "request_rows": wording.rows, "mode_says": wording.mode_says,
            "lang": locale, "other_languages": [code for code in LANGUAGES if code != locale]}


def _runtime() -> Any:
    return current_app.extensions["aurora"]


def _throttle() -> SignInThrottle:
    throttle = current_app.extensions.get("aurora_signin")
    if throttle is None:
        throttle = current_app.extensions["aurora_signin"] = SignInThrottle(_runtime().limiter.storage)
    return throttle


@bp.before_request
def load_caller() -> Any:
    g.caller = None
    if request.endpoint in ("ui.login", "ui.static", "ui.language"):
        return None
    try:
        g.caller = websessions.caller(_runtime().db, session.get("sid"))
    except AuthError:
        session.clear()
        return redirect(url_for("ui.login", next=request.path))
    return None


def describe(goal: str, payload: dict[str, Any]) -> list[tuple[str, str]]:
    """The payload in plain words, for a run without a rendered request (one that never waited
    for votes); what approvers approve is ``run["approval"]`` (``aurora.binding``)."""
    if goal == "charge":
        rows = [("Amount", f"{payload['amount']} {payload['currency'].upper()}"), ("Customer", payload["customer"])]
        if payload.get("description"):
            rows.append(("Description", payload["description"]))
        return rows
    if goal == "post_external":
        rows = [("Platform", payload["platform"].capitalize()), ("Post text", payload["content"])]
        if payload.get("media_url"):
            rows.append(("Image URL", payload["media_url"]))
        return rows
    if goal == "send_email":
        to = payload["to"] if isinstance(payload["to"], list) else [payload["to"]]
        rows = [("Recipients", ", ".join(to)), ("Subject", payload["subject"])]
        for field in ("text", "template"):
            if payload.get(field):
                rows.append((field.capitalize(), payload[field]))
        return rows
    if goal == "analyse":
        return [("Text", payload["text"])]
    return [(key, str(value)) for key, value in payload.items()]


@bp.app_template_global()
def can_vote(run: dict[str, Any]) -> bool:
    """Whether the signed-in person may still vote: not the submitter's person, and no vote of
    theirs (from any key) counting for the request as it is now."""
    caller = g.get("caller")
    return bool(caller and caller.role in (Role.APPROVER, Role.ADMIN) and run["status"] == "awaiting_approval"
                and run.get("submitted_by_person", run["submitted_by"]) != caller.person
                and not any(v["person"] == caller.person and v["counts"]
                            for v in run.get("approvals", {}).get("votes", [])))


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    if request.method == "POST":
        key = (request.form.get("key") or "").strip()
        parts = key.split("_")
        wait = _throttle().attempt(request.remote_addr or "unknown", parts[1][:16] if len(parts) >= 3 else None)
        if wait:
            flash(gettext("Too many sign-in attempts; try again in %(seconds)s s.", seconds=wait), "error")
            return render_template("login.html"), 429, {"Retry-After": str(wait)}
        try:
            caller = keys.authenticate(_runtime().db, key)
        except AuthError:
            flash(gettext("That key is not valid."), "error")
            return render_template("login.html"), 401
        session.clear()
        session["sid"] = websessions.start(_runtime().db, parts[1])
        session.permanent = True
        flash(gettext("Signed in as %(person)s (%(role)s, key %(key)s).", person=caller.person,
                      role=caller.role.value, key=caller.name), "ok")
        target = request.args.get("next") or ""
        return redirect(target if target.startswith("/ui/") else url_for("ui.index"))
    return render_template("login.html")


@bp.get("/language/<code>")
def language(code: str) -> Any:
    """The language link: kept in a cookie for a year, then back to the page it was clicked on."""
    target = request.args.get("next") or ""
    response = redirect(target if target.startswith("/ui/") and not target.startswith("/ui//")
                        else url_for("ui.index"))
    if code in LANGUAGES:
        response.set_cookie(LANGUAGE_COOKIE, code, max_age=365 * 24 * 3600, httponly=True, samesite="Lax",
                            secure=current_app.config["SESSION_COOKIE_SECURE"])
    return response


@bp.post("/logout")
def logout() -> Any:
    websessions.end(_runtime().db, session.get("sid"))  # the cookie alone stops working too
    session.clear()
    return redirect(url_for("ui.login"))


@bp.get("/")
def index() -> Any:
    engine = _runtime().engine
    waiting = approvals.waiting_for(engine, g.caller)
    with _runtime().db.read() as db_session:
        recent = run_views.listing(db_session, limit=25)["runs"]
    return render_template("index.html", waiting=waiting, recent=recent)


@bp.get("/runs/<run_id>")
def run_page(run_id: str) -> Any:
    from .. import ledger

    ledger.refresh(_runtime().engine, [run_id])  # a waiting run shows what it would send now
    with _runtime().db.read() as db_session:
        if db_session.scalar(select(Run.pk).where(Run.id == run_id)) is None:
            return render_template("message.html", title=gettext("Not found"),
                                   message=gettext("There is no such run.")), 404
        run = run_views.detail(db_session, run_id, _runtime().settings.node_name)
    summary = [{"label": label, "value": value}
               for label, value in describe(run["goal"], run["document"].get("payload", {}))]
    # the live timeline names statuses and events in the page's language, as the page does
    statuses = {s.value: wording.status_name(s.value) for s in RunStatus}
    event_names = {f"run.{s.value}": wording.event_name(f"run.{s.value}") for s in RunStatus}
    return render_template("run.html", run=run, summary=summary, statuses=statuses, event_names=event_names,
                           final_statuses=[s.value for s in RunStatus if s.final])


@bp.get("/runs/<run_id>/stream")
def run_stream(run_id: str) -> Any:
    """The page's live timeline: the run's events as server-sent events."""
    from .streaming import stream_response

    return stream_response(_runtime().db, run_id, _runtime().settings.node_name, named=False)


@bp.post("/runs/<run_id>/<decision>")
def vote(run_id: str, decision: str) -> Any:
    if decision not in ("approve", "reject"):
        return render_template("message.html", title=gettext("Not found"), message=gettext("Unknown action.")), 404
    comment = (request.form.get("comment") or "").strip() or None
    # the rendering the page showed: a vote never counts for a request the approver did not see
    shown = request.form.get("request_hash") or None
    try:
        result = approvals.vote(_runtime().engine, run_id, g.caller, decision, comment, "web", shown)
        # The words are chosen when the page is shown (wording.vote_message): by then a run whose
        # quorum this vote completed may be running or done already.
        if result["status"] == "rejected":
            code = "reject"
        elif result["status"] == "awaiting_approval":
            code = f"approve:{result['gate'].get('missing', 0)}"
        else:
            code = "approve:done"
        flash(code, "vote")
    except AuroraError as exc:
        flash(wording.vote_error(exc.code, str(exc)), "error")
    return redirect(url_for("ui.run_page", run_id=run_id))


@bp.get("/nodes")
def nodes_page() -> Any:
    """The federation view: each peer's state, and the latest events that came from elsewhere."""
    from .. import events
    from ..federation import registry
    from ..models import Event

    runtime = _runtime()
    interval = float(runtime.policies.current().federation["sync_interval"])
    origin = request.args.get("origin")
    with runtime.db.read() as db_session:
        # another node's events have no run_pk: saying so reads them from their own index
        query = select(Event).where(Event.run_pk.is_(None)).order_by(Event.seq.desc()).limit(50)
        query = query.where(Event.origin == origin) if origin else query.where(
            Event.origin != runtime.settings.node_name)
        received = [events.as_dict(e) for e in db_session.scalars(query)]
    return render_template("nodes.html", nodes=registry.listing(runtime.db, interval), received=received,
                           origin=origin, node=runtime.settings.node_name)


@bp.get("/definitions")
def definitions_page() -> Any:
    """The stored definitions: version, triggers, the next scheduled start and the last runs."""
    from .. import definitions

    return render_template("definitions.html", definitions=definitions.listing(_runtime().db))
