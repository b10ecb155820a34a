"""What starts a stored definition besides a person: a schedule, a signed webhook.

**Schedules** are cron expressions in a time zone (``"0 9 * * MON"``, ``Europe/Berlin``), read by
``cronsim`` (the cron reader of healthchecks.io: day-of-month/day-of-week as cron has them, and
daylight-saving changes handled — a 02:30 that does not exist that night fires once at the
change, one that exists twice fires once). Beat looks every :data:`TICK` seconds
(:func:`fire_schedules`). Each firing is a run started with a key made of the definition, the
trigger and the scheduled time (not the version), inside the run's own transaction
(``aurora.idempotency``): two beats, a retried tick, a restart or a clock jump start it once. After downtime, a firing missed by
more than :data:`GRACE` is skipped — or, with ``catchup: true``, the latest missed one is started
once (never the whole backlog).

**Forms**: ``on: typeform: {form_id, inputs}`` starts the definition for each answer to that form
(the Typeform webhook, ``aurora.webhooks``), with ``allow_typeform_auto_ingest`` on, once per
response token; ``inputs`` maps input names to the answers' field refs.

**Webhooks**: ``POST /hooks/<name>`` is verified with the Standard Webhooks scheme by the
``standardwebhooks`` library (``webhook-id``, ``webhook-timestamp`` within five minutes,
``webhook-signature``: HMAC-SHA256 under the definition's secret, shown once by ``aurora workflows
secret NAME``), and a ``webhook-id`` seen before is refused (409): a replay never starts a second run.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets as random
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from sqlalchemy import select, update

from . import audit, documents, flow_runs
from .errors import AuroraError, Conflict, IdempotencyKeyReused, NotFound, Problem
from .models import Definition, utcnow

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger(__name__)

#: how often beat looks for due firings (seconds)
TICK = 20.0
#: a firing this late (downtime, a slow beat) is still started; a later one only with catchup
GRACE = timedelta(minutes=5)
#: the most firings of one trigger looked at in one tick (a minutely cron after a week down)
_MAX_SCAN = 20_000


class HookRefused(AuroraError):
    """A webhook call that is not proven to come from the holder of the definition's secret."""

    code = "webhook_rejected"
    http_status = 401


class HookNotFound(NotFound):
    code = "no_such_webhook"
    http_status = 404


class HookReplayed(Conflict):
    code = "webhook_replayed"


class HookUnverifiable(AuroraError):
    """The definition's secret does not open here (a lost or another node's key file): the
    operator's fault, told in the log; the caller gets a 503 its sender retries."""

    code = "webhook_unverifiable"
    http_status = 503


# -- schedules --------------------------------------------------------------------------------------

def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def check_triggers(on: dict[str, Any]) -> list[Problem]:
    problems = []
    for index, item in enumerate(on.get("schedule") or []):
        where = f"on.schedule[{index}]"
        try:
            tz = zone(item.get("timezone", "UTC"))
        except (ZoneInfoNotFoundError, ValueError):
            problems.append(Problem(f"{where}.timezone", f"{item.get('timezone')!r} is not a time zone (e.g. Europe/Berlin)"))
            continue
        if len(item["cron"].split()) > 5:  # cronsim reads a sixth field as seconds: "* * * * * *" every second
            problems.append(Problem(f"{where}.cron", f"{item['cron']!r}: five fields (minute hour day-of-month "
                                                     "month day-of-week), no seconds"))
            continue
        try:
            next(CronSim(item["cron"], datetime.now(tz)))
        except (CronSimError, StopIteration) as exc:
            problems.append(Problem(f"{where}.cron", f"{item['cron']!r} is not a cron expression: {exc}"))
    return problems


def firings(cron: str, tz: str, after: datetime, until: datetime) -> list[datetime]:
    """The scheduled times in (after, until], in UTC."""
    out: list[datetime] = []
    for when in CronSim(cron, after.astimezone(zone(tz))):
        if when > until:
            break
        if when > after:
            out.append(when.astimezone(UTC))
        if len(out) >= _MAX_SCAN:
            break
    return out


def next_firing(on: dict[str, Any], now: datetime | None = None) -> datetime | None:
    now = now or utcnow()
    times = []
    for item in on.get("schedule") or []:
        try:
            times.append(next(CronSim(item["cron"], now.astimezone(zone(item.get("timezone", "UTC"))))).astimezone(UTC))
        except (ZoneInfoNotFoundError, ValueError, CronSimError, StopIteration):
            continue  # a stored schedule this host cannot read (its tzdata lacks the zone): no next time to show
    return min(times) if times else None


def due(item: dict[str, Any], checked: datetime, now: datetime) -> list[datetime]:
    """The firings of one schedule to start now, having looked up to ``checked`` before."""
    # Look forward from at most GRACE ago (never the whole downtime: _MAX_SCAN would keep the
    # oldest firings of a long one), and back from now for the latest missed one.
    recent = firings(item["cron"], item.get("timezone", "UTC"), max(checked, now - GRACE), now)
    if recent or not item.get("catchup"):
        return recent
    latest = next(CronSim(item["cron"], now.astimezone(zone(item.get("timezone", "UTC"))), reverse=True), None)
    return [latest.astimezone(UTC)] if latest is not None and latest > checked else []


def once_key(kind: str, name: str, what: str) -> str:
    """A trigger's idempotency key: per definition (two definitions on the same schedule, form or
    webhook-id scheme must not refuse each other) and at most the keys' 255 characters."""
    key = f"{kind}:{name}:{what}"
    return key if len(key) <= 255 else f"{kind}:{name}:sha256:{hashlib.sha256(what.encode()).hexdigest()}"


def fire_schedules(engine: Engine, now: datetime | None = None) -> list[str]:
    """Start every due scheduled firing of the enabled definitions; return the new runs' ids."""
    now = now or utcnow()
    started: list[str] = []
    with engine.db.read() as session:
        names = [(d.name, d.schedule_checked_at or d.created_at) for d in session.scalars(
            select(Definition).where(Definition.enabled.is_(True)))]
    for name, checked in names:
        ahead = checked > now + GRACE
        if ahead:  # a tick ran with a clock far ahead, or ours went back: never backwards would mean silent until then
            log.warning("schedules of %s were looked at up to %s, after now (%s): the clock went back; "
                        "looking from now", name, checked.isoformat(), now.isoformat())
            checked = now - GRACE  # what that tick already started has its keys: nothing starts twice
        try:
            _fire_one(engine, name, checked, now, started)
        except Exception:  # one broken definition (a zone this host's tzdata lacks…) must not stop the others
            log.exception("schedules of %s not looked at; the next tick tries again", name)
            continue  # not marked as looked at: a passing fault (the database) is caught up within GRACE
        with engine.db.write() as session:  # a later tick looks from here on (a CAS: never backwards)
            session.execute(update(Definition).where(
                Definition.name == name,
                (Definition.schedule_checked_at.is_(None)) | (Definition.schedule_checked_at < now)
                | (Definition.schedule_checked_at > now + GRACE),
            ).values(schedule_checked_at=now))
    return started


def _fire_one(engine: Engine, name: str, checked: datetime, now: datetime, started: list[str]) -> None:
    from . import definitions

    _, row = definitions.get(engine.db, name)
    on = row.document["on"]
    for index, item in enumerate(on.get("schedule") or []):
        for when in due(item, checked, now):
            local = when.astimezone(zone(item.get("timezone", "UTC")))
            trigger = {"by": "schedule", "scheduled_for": when.isoformat(), "timezone": item.get("timezone", "UTC"),
                       "cron": item["cron"],
                       "text": f"started by schedule {local:%Y-%m-%d %H:%M} {item.get('timezone', 'UTC')}"}
            # not the version: a firing that version 1 started is not started again by version 2
            # (a retried tick, or a second beat, after an apply in that minute)
            key = once_key("schedule", name, f"{index}:{when.isoformat()}")
            try:
                run, new = definitions.start(engine, name, item.get("inputs"), "schedule", "schedule",
                                             trigger=trigger, once_key=key)
            except IdempotencyKeyReused:
                log.info("schedule of %s at %s: started before by an earlier version", name, when.isoformat())
                continue
            except AuroraError as exc:  # a definition that cannot start: say so once per firing
                log.warning("schedule of %s at %s not started: %s", name, when.isoformat(), exc)
                continue
            if new:
                started.append(run.id)


# -- webhooks ---------------------------------------------------------------------------------------

def new_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(random.token_bytes(32)).decode()


def rotate_secret(engine: Engine, name: str, who: str) -> str:
    from . import definitions
    from .sealed import seal

    definitions.get(engine.db, name)
    secret = new_secret()
    with engine.db.write() as session:
        session.execute(update(Definition).where(Definition.name == name).values(
            webhook_secret=seal(engine.settings.home / "definitions.key", secret), updated_at=utcnow()))
        audit.note(engine.db, session, "definitions", "webhook_secret", {"definition": name, "by": who})
    return secret


def receive(engine: Engine, name: str, body: bytes, headers: dict[str, str]) -> tuple[Any, bool]:
    """Verify a webhook call and start the definition's run with the inputs its body gives."""
    from standardwebhooks import Webhook

    from . import definitions
    from .sealed import SealError, unseal

    try:
        definition, row = definitions.get(engine.db, name)
    except AuroraError:
        raise HookNotFound(f"no webhook for {name[:64]!r}") from None
    on = row.document["on"]
    if "webhook" not in on or not definition.webhook_secret:
        raise HookRefused("this definition has no webhook trigger, or no secret yet (aurora workflows secret NAME)")
    try:
        secret = unseal(engine.settings.home / "definitions.key", definition.webhook_secret)
    except SealError as exc:
        log.error("webhook of %s cannot be verified: %s", name, exc)
        raise HookUnverifiable("this webhook cannot be verified on this server now; try again later") from None
    try:
        Webhook(secret).verify(body, headers, json_parse=False)
    except Exception as exc:  # noqa: BLE001 - any failure of the check (bad header, bad base64) is a refusal
        raise HookRefused(f"signature refused: {exc.__class__.__name__}: {str(exc)[:120]}") from None
    value = documents.parse(body or b"{}", fmt="json", max_bytes=64 * 1024)
    raw_id = {k.lower(): v for k, v in headers.items()}["webhook-id"]
    msg_id = raw_id[:128]
    inputs = map_inputs(row.document["workflow"], on["webhook"].get("inputs"), value)
    trigger = {"by": "webhook", "webhook_id": msg_id, "text": f"started by webhook {msg_id}"}
    try:
        run, new = definitions.start(engine, name, inputs, "webhook", "webhook", trigger=trigger,
                                     once_key=once_key("webhook", name, raw_id))
    except IdempotencyKeyReused:  # the id came before with another body: a replay all the same
        raise HookReplayed(f"webhook {msg_id} was received before; a replay starts nothing") from None
    if not new:
        raise HookReplayed(f"webhook {msg_id} was received before (run {run.id}); a replay starts nothing")
    return run, new


def start_by_form(engine: Engine, form_id: str, token: str, answers: dict[str, Any]) -> list[str]:
    """Start the enabled definitions whose ``on: typeform`` names this form, once per answer
    (the response token is the key); returns the new runs' ids, sent to the workers."""
    from . import definitions
    from .queue import enqueue

    started = []
    with engine.db.read() as session:
        names = list(session.scalars(select(Definition.name).where(Definition.enabled.is_(True))))
    for name in names:
        _, row = definitions.get(engine.db, name)
        trigger_spec = row.document["on"].get("typeform")
        if not trigger_spec or trigger_spec.get("form_id") != form_id:
            continue
        workflow = row.document["workflow"]
        mapping = trigger_spec.get("inputs") or {k: k for k in (workflow.get("inputs") or {})}
        inputs = {name_: answers[ref] for name_, ref in mapping.items() if ref in answers} if "steps" in workflow else None
        trigger = {"by": "typeform", "form_id": form_id, "token": token[:64],
                   "text": f"started by an answer to form {form_id}"}
        try:
            run, new = definitions.start(engine, name, inputs, "typeform", "typeform", trigger=trigger,
                                         once_key=once_key("typeform", name, f"{form_id}:{token[:64]}"))
        except AuroraError as exc:
            log.warning("form %s: definition %s not started: %s", form_id, name, exc)
            continue
        if new:
            started.append(run.id)
            for ready in flow_runs.ready_steps(engine, run.id) or [run.id]:
                enqueue(ready)
    return started


def map_inputs(workflow: dict[str, Any], mapping: dict[str, str] | None, body: Any) -> dict[str, Any] | None:
    declared = workflow.get("inputs") or {}
    if "steps" not in workflow:
        return None
    if mapping:
        return {name: value for name, pointer in mapping.items()
                if (value := _pointer(body, pointer)) is not _MISSING}
    return {k: v for k, v in body.items() if k in declared} if isinstance(body, dict) else {}


_MISSING = object()


def _pointer(value: Any, pointer: str) -> Any:
    """RFC 6901 JSON pointer."""
    for part in pointer.split("/")[1:]:
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value
