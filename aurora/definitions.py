"""Stored workflow definitions: named, versioned, started by people or by their triggers.

``aurora workflows apply FILE`` (``PUT /definitions/<name>``) stores a workflow document under its
name; applying changed content makes a new version (a number and the content's hash), applying
the same content again changes nothing. A definition's ``on:`` says what starts it besides a
person (``aurora.triggers``): a schedule, a signed webhook. A run started from a definition
records the definition and version it came from, and its timeline says what started it.

Who may do what: admins apply, disable, enable and rotate a webhook secret (what a definition
does and who can start it); submitters start runs of enabled definitions; every role may look.
Each change is an audit record.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Any

from jsonschema import Draft202012Validator
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from . import audit, documents
from .errors import Conflict, DocumentError, NotFound, Problem
from .models import Definition, DefinitionVersion, Run, utcnow

if TYPE_CHECKING:
    from .db import Database
    from .engine import Engine


class DefinitionDisabled(Conflict):
    """Raised when a disabled definition is asked to start a run."""

    code = "definition_disabled"


@dataclass(frozen=True)
class Applied:
    name: str
    version: int
    digest: str
    changed: bool


_TRIGGERS_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "schedule": {"type": "array", "minItems": 1, "maxItems": 10, "items": {
            "type": "object", "additionalProperties": False, "required": ["cron"],
            "properties": {
                "cron": {"type": "string", "minLength": 9, "maxLength": 120,
                         "description": "minute hour day-of-month month day-of-week, as cron reads it"},
                "timezone": {"type": "string", "minLength": 1, "maxLength": 64, "default": "UTC"},
                "catchup": {"type": "boolean", "default": False,
                            "description": "after downtime, start the latest missed firing once (true) or skip it"},
                "inputs": {"type": "object"},
            }}},
        "typeform": {"type": "object", "additionalProperties": False, "required": ["form_id"], "properties": {
            "form_id": {"type": "string", "minLength": 1, "maxLength": 64},
            "inputs": {"type": "object", "additionalProperties": {"type": "string", "maxLength": 128},
                       "description": "input name -> the answer's field ref (default: refs named like inputs)"}}},
        "webhook": {"type": "object", "additionalProperties": False, "properties": {
            "inputs": {"type": "object", "additionalProperties": {"type": "string", "pattern": "^(/[^/]*)*$"},
                       "description": "input name -> JSON pointer into the body (default: the body's top-level "
                                      "keys named like inputs)"}}},
    },
}


@cache
def _triggers_validator() -> Draft202012Validator:
    return Draft202012Validator(_TRIGGERS_SCHEMA)


def parse_definition(body: bytes | str, fmt: str = "yaml", max_bytes: int = 256 * 1024) -> tuple[dict[str, Any], Any]:
    """A definition document: its workflow (validated as any submitted workflow would be, with the
    inputs' defaults) and its ``on:`` triggers (validated, with their cron expressions and zones)."""
    from .triggers import check_triggers

    value = documents.parse(body, fmt=fmt, max_bytes=max_bytes)
    if not isinstance(value, dict):
        raise DocumentError([Problem("", "a definition is a workflow document (a mapping)")])
    value = copy.deepcopy(value)
    on = value.pop("on", None) or {}
    problems = [Problem("on" + "".join(f".{p}" if isinstance(p, str) else f"[{p}]" for p in e.absolute_path),
                        e.message) for e in _triggers_validator().iter_errors(on)]
    if not problems:
        problems = check_triggers(on)
    try:
        documents.validate(value, _placeholder_inputs(value))
    except DocumentError as exc:
        problems += exc.problems
    if not problems:
        problems = _check_trigger_inputs(value, on)
    if problems:
        raise DocumentError(sorted(problems, key=lambda p: p.path))
    return value, on


def _check_trigger_inputs(document: dict[str, Any], on: dict[str, Any]) -> list[Problem]:
    """A schedule starts its runs with its own ``inputs`` and nobody to ask, a form or a webhook
    through a mapping: inputs that cannot start a run are refused now, not found failing at every
    firing or call (for a form: in a log line only)."""
    declared = document.get("inputs") or {}
    problems = [Problem(f"on.{kind}.inputs.{name}", f"this workflow has no input {name!r}"
                        + (f" (its inputs: {', '.join(sorted(declared))})" if declared else ""))
                for kind in ("typeform", "webhook")
                for name in ((on.get(kind) or {}).get("inputs") or {}) if name not in declared]
    for index, item in enumerate(on.get("schedule") or []):
        where = f"on.schedule[{index}].inputs"
        if "steps" not in document:
            if item.get("inputs"):
                problems.append(Problem(where, "this definition is a single task: it has no inputs"))
            continue
        try:
            documents.validate(document, item.get("inputs"))
        except DocumentError as exc:
            problems += [Problem(f"on.schedule[{index}].{p.path}" if p.path.startswith("inputs") else where,
                                 p.message if p.path.startswith("inputs") else f"{p.path}: {p.message}")
                         for p in exc.problems]
    return problems


def _placeholder_inputs(document: dict[str, Any]) -> dict[str, Any] | None:
    """Values for inputs without a default, so that a definition's templates can be checked when
    it is applied (the real values come with each run)."""
    if "steps" not in document:
        return None
    samples = {"string": "x", "integer": 1, "number": 1, "boolean": True}
    given = {}
    for name, spec in (document.get("inputs") or {}).items():
        if "default" in spec:
            continue
        if "enum" in spec:
            given[name] = spec["enum"][0]
        elif spec.get("format") == "email":
            given[name] = "someone@example.com"
        else:
            given[name] = samples.get(spec.get("type", "string"), "x")
    return given


def apply(db: Database, body: bytes | str, who: str, fmt: str = "yaml", max_bytes: int = 256 * 1024,
          name: str | None = None) -> Applied:
    """Store a definition; a new version only if its content changed. ``name``: the name the
    caller addressed (``PUT /definitions/<name>``), which must be the document's."""
    workflow, on = parse_definition(body, fmt, max_bytes)
    if name is not None and workflow["name"] != name:
        raise DocumentError([Problem("name", f"the document is named {workflow['name']!r}, not {name!r}")])
    content = {"workflow": documents.normalise(workflow), "on": on}
    digest = documents.digest(content)
    for attempt in (1, 2):
        try:
            return _store(db, workflow["name"], content, digest, who)
        except IntegrityError:  # a racing first apply of the same name inserted it: the second pass sees it
            if attempt == 2:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _store(db: Database, name: str, content: dict[str, Any], digest: str, who: str) -> Applied:
    now = utcnow()
    with db.write() as session:
        definition = session.scalar(select(Definition).where(Definition.name == name).with_for_update())
        if definition is not None:
            latest = session.scalar(select(DefinitionVersion).where(
                DefinitionVersion.name == definition.name, DefinitionVersion.version == definition.version))
            if latest is not None and latest.digest == digest:
                return Applied(definition.name, definition.version, digest, False)
            definition.version += 1
            definition.updated_at = now
        else:
            definition = Definition(name=name, version=1, enabled=True, created_at=now, updated_at=now)
            session.add(definition)
        session.add(DefinitionVersion(name=definition.name, version=definition.version, digest=digest,
                                      document=content, created_by=who, created_at=now))
        session.flush()
        audit.note(db, session, "definitions", "apply",
                   {"definition": definition.name, "version": definition.version, "digest": digest, "by": who})
        return Applied(definition.name, definition.version, digest, True)


def get(db: Database, name: str, version: int | None = None) -> tuple[Definition, DefinitionVersion]:
    with db.read() as session:
        definition = session.scalar(select(Definition).where(Definition.name == name))
        if definition is None:
            raise NotFound(f"no definition {name!r} (aurora workflows list shows them)")
        wanted = version or definition.version
        row = session.scalar(select(DefinitionVersion).where(
            DefinitionVersion.name == name, DefinitionVersion.version == wanted))
        if row is None:
            raise NotFound(f"definition {name!r} has no version {wanted} (its latest is {definition.version})")
        session.expunge_all()
        return definition, row


def listing(db: Database) -> list[dict[str, Any]]:
    from .triggers import next_firing

    with db.read() as session:
        rows = session.execute(select(Definition, DefinitionVersion).join(
            DefinitionVersion, (DefinitionVersion.name == Definition.name)
            & (DefinitionVersion.version == Definition.version)).order_by(Definition.name)).all()
        out = []
        for definition, version in rows:
            last = session.execute(select(Run.id, Run.status, Run.created_at).where(
                Run.definition == definition.name).order_by(Run.pk.desc()).limit(3)).all()
            out.append({**summary(definition, version), "next_firing": _iso(next_firing(version.document["on"])),
                        "last_runs": [{"id": r.id, "status": r.status, "created_at": r.created_at.isoformat()}
                                      for r in last]})
        return out


def summary(definition: Definition, version: DefinitionVersion) -> dict[str, Any]:
    on = version.document["on"]
    return {"name": definition.name, "version": version.version, "latest_version": definition.version,
            "digest": version.digest, "enabled": definition.enabled, "triggers": sorted(on),
            "applied_at": version.created_at.isoformat(), "applied_by": version.created_by,
            "has_webhook_secret": bool(definition.webhook_secret)}


def show(db: Database, name: str, version: int | None = None) -> dict[str, Any]:
    from .triggers import next_firing

    definition, row = get(db, name, version)
    return {**summary(definition, row), "document": row.document["workflow"], "on": row.document["on"],
            "next_firing": _iso(next_firing(row.document["on"]))}


def history(db: Database, name: str) -> list[dict[str, Any]]:
    get(db, name)
    with db.read() as session:
        return [{"version": v.version, "digest": v.digest, "applied_by": v.created_by,
                 "applied_at": v.created_at.isoformat()}
                for v in session.scalars(select(DefinitionVersion).where(
                    DefinitionVersion.name == name).order_by(DefinitionVersion.version))]


def set_enabled(db: Database, name: str, enabled: bool, who: str) -> dict[str, Any]:
    get(db, name)
    now = utcnow()
    with db.write() as session:
        if enabled:  # what it missed while off is not downtime: its schedule looks on from now, not back
            session.execute(update(Definition).where(Definition.name == name, Definition.enabled.is_(False))
                            .values(schedule_checked_at=now))
        session.execute(update(Definition).where(Definition.name == name).values(enabled=enabled, updated_at=now))
        audit.note(db, session, "definitions", "enable" if enabled else "disable", {"definition": name, "by": who})
    return {"name": name, "enabled": enabled}


def start(engine: Engine, name: str, inputs: dict[str, Any] | None, submitter: str, person: str | None,
          trigger: dict[str, Any] | None = None, once_key: str | None = None) -> tuple[Run, bool]:
    """Start a run of the definition's current version. ``trigger``: what started it (for its
    timeline); ``once_key``: a run is started once per key (a schedule's firing, a webhook's id)."""
    definition, row = get(engine.db, name)
    if not definition.enabled:
        raise DefinitionDisabled(f"definition {name!r} is disabled (aurora workflows enable {name})")
    document = row.document["workflow"]
    workflow = documents.validate(document, inputs if "steps" in document else None)
    if inputs and "steps" not in document:
        raise DocumentError([Problem("inputs", "this definition is a single task: it has no inputs")])
    origin = {"definition": name, "definition_version": row.version}
    if trigger is not None and trigger.get("by") != "person":
        # Nobody pressed start: the run is the doing of whoever applied this version, so no key of
        # that person may approve it (GitHub's scheduled runs act as the workflow's last editor).
        person = _applier(engine.db, row.created_by)
    return engine.submit_once(workflow, submitter, once_key, person, origin=origin, trigger=trigger)


def _applier(db: Database, key_name: str) -> str:
    """The person holding the key that applied a version (the key's name for older keys)."""
    from .models import ApiKey

    with db.read() as session:
        person = session.scalar(select(func.coalesce(ApiKey.person, ApiKey.name)).where(ApiKey.name == key_name))
    return person or key_name


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
