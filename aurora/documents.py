"""Workflow documents: bytes in, a validated, normalised workflow out, or every problem at once.

YAML is read with PyYAML's safe loader (libyaml's C parser where present). Before anything is
built from it, one pass over the parser's events rejects what a workflow never needs and an
attacker loves: aliases (billion-laughs bombs), non-standard tags (``!!python/object``), several
documents in one stream, nesting deeper than :data:`MAX_DEPTH`, duplicate keys and non-string
keys. The built value is then checked against ``schemas/workflow.schema.json``.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
import sys
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

import yaml
from jsonschema.exceptions import ValidationError, best_match

from . import flows
from .errors import AmountError, DocumentError, DocumentSyntaxError, DocumentTooLarge, Problem
from .money import to_minor_units
from .workflow_schema import surely_valid, validator

#: integers longer than this cannot be turned into text (Python's 4,300-digit limit)
_MAX_INT_BITS = int(sys.get_int_max_str_digits() * 3.32) - 8
#: deepest nesting of mappings and sequences a workflow may have
MAX_DEPTH = 32
#: goals whose action is expensive or public: they always need a quorum of approvals
CRITICAL_GOALS = frozenset({"charge", "post_external"})
#: every goal a workflow may have
GOALS = frozenset({"analyse", "send_email", "post_external", "charge", "ingest_forms"})

_Loader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_ALLOWED_TAGS = {
    None, "!",
    "tag:yaml.org,2002:str", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool", "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq",
}


class _WorkflowLoader(_Loader):  # type: ignore[misc, valid-type]
    """Safe loader that keeps dates as the strings the user wrote (JSON has no date type), and
    reads booleans as YAML 1.2 does: only true and false (YAML 1.1 also read yes, no, on and off,
    so a definition's ``on:`` became the key True)."""


_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_WorkflowLoader.yaml_implicit_resolvers = {
    first: [(tag, _BOOL if tag == "tag:yaml.org,2002:bool" else rx) for tag, rx in resolvers
            if tag != "tag:yaml.org,2002:timestamp" and not (tag == "tag:yaml.org,2002:bool" and first in "yYnNoO")]
    for first, resolvers in _Loader.yaml_implicit_resolvers.items()
}


@dataclass(frozen=True)
class Workflow:
    """A validated workflow document and the hash that approvals are bound to; a workflow of
    several steps (``aurora.flows``) also carries the inputs it was submitted with."""

    document: dict[str, Any]
    digest: str
    inputs: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return self.document["name"]

    @property
    def goal(self) -> str:
        return self.document.get("goal", flows.FLOW_GOAL)

    @property
    def is_flow(self) -> bool:
        return "steps" in self.document

    @property
    def payload(self) -> dict[str, Any]:
        return self.document.get("payload", {})

    @property
    def critical(self) -> bool:
        return self.goal in CRITICAL_GOALS


def _syntax(message: str, path: str = "", mark: Any = None, hint: str | None = None) -> DocumentSyntaxError:
    line, column = (mark.line + 1, mark.column + 1) if mark is not None else (None, None)
    return DocumentSyntaxError([Problem(path, message, line, column, hint)])


def _tab_hint(text: str, mark: Any) -> str | None:
    """Tabs: YAML indents with spaces only, and PyYAML's message does not say so."""
    if mark is None:
        return None
    lines = text.splitlines()
    for number in (mark.line, mark.line - 1):
        if 0 <= number < len(lines) and "\t" in lines[number][:len(lines[number]) - len(lines[number].lstrip())]:
            return f"line {number + 1} is indented with a tab; YAML indents with spaces only"
    return None


def _check_events(text: str) -> None:  # noqa: C901 - one pass, one branch per construct
    """Reject forbidden YAML constructs from the event stream, before building anything."""
    # Each open collection: [is_mapping, expecting_key, keys_seen]
    stack: list[list[Any]] = []
    documents = 0

    def value_done() -> None:
        if stack and stack[-1][0]:
            stack[-1][1] = not stack[-1][1]

    try:
        for event in yaml.parse(text, Loader=_Loader):
            if isinstance(event, yaml.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    raise _syntax("a workflow file holds exactly one YAML document; found a second", mark=event.start_mark)
            elif isinstance(event, yaml.AliasEvent):
                raise _syntax("YAML aliases (*name) are not allowed in workflows", mark=event.start_mark)
            elif isinstance(event, (yaml.ScalarEvent, yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                if event.tag not in _ALLOWED_TAGS:
                    raise _syntax(f"YAML tag {event.tag!r} is not allowed", mark=event.start_mark)
                if event.anchor is not None:
                    raise _syntax("YAML anchors (&name) are not allowed in workflows", mark=event.start_mark)
                in_key = bool(stack) and stack[-1][0] and stack[-1][1]
                if isinstance(event, yaml.ScalarEvent):
                    if in_key:
                        keys = stack[-1][2]
                        if event.value in keys:
                            raise _syntax(f"duplicate key {event.value!r}", mark=event.start_mark)
                        keys.add(event.value)
                    value_done()
                else:
                    if in_key:
                        raise _syntax("mapping keys must be plain strings", mark=event.start_mark)
                    if len(stack) >= MAX_DEPTH:
                        raise _syntax(f"nesting deeper than {MAX_DEPTH} levels", mark=event.start_mark)
                    stack.append([isinstance(event, yaml.MappingStartEvent), True, set()])
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                stack.pop()
                value_done()
    except yaml.MarkedYAMLError as exc:
        problem = exc.problem or exc.context or "invalid YAML"
        hint = _tab_hint(text, exc.problem_mark)
        if hint:
            problem = "a tab where YAML expects spaces"
        raise _syntax(f"invalid YAML: {problem}", mark=exc.problem_mark, hint=hint) from None
    except yaml.YAMLError as exc:
        raise _syntax(f"invalid YAML: {exc}") from None


def _check_values(value: Any, path: str = "", depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        raise _syntax(f"nesting deeper than {MAX_DEPTH} levels", path)
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise _syntax(f"key {key!r} must be a string", path)
            _check_values(item, f"{path}.{key}" if path else key, depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_values(item, f"{path}[{index}]", depth + 1)
    elif isinstance(value, float) and not math.isfinite(value):
        raise _syntax(f"{value!r} is not a finite number", path)
    elif isinstance(value, int) and value.bit_length() > _MAX_INT_BITS:
        # YAML's hex and octal integers have no digit limit, and such a value cannot even be
        # printed in an error message (str() refuses it): refuse it here, by its place
        raise _syntax(f"a number has more than {sys.get_int_max_str_digits()} digits", path)


def _decode(body: bytes | str, max_bytes: int) -> str:
    size = len(body.encode("utf-8")) if isinstance(body, str) else len(body)
    if size > max_bytes:
        raise DocumentTooLarge([Problem("", f"document is {size} bytes; the limit is {max_bytes}")])
    if isinstance(body, str):
        return body
    try:
        return body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _syntax(f"document is not UTF-8 (invalid byte at offset {exc.start})") from None


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _syntax(f"duplicate key {key!r}")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise _syntax(f"{name} is not a valid JSON number")


def _too_long(exc: ValueError) -> str:
    limit = sys.get_int_max_str_digits()
    return f"a number has more than {limit} digits" if "digits" in str(exc) else "a value cannot be read"


def parse(body: bytes | str, *, fmt: str = "yaml", max_bytes: int = 256 * 1024) -> Any:
    """Turn a YAML or JSON body into plain Python values, or raise :class:`DocumentSyntaxError`."""
    text = _decode(body, max_bytes)
    if not text.strip():
        raise _syntax("document is empty")
    if fmt == "json":
        try:
            value = json.loads(text, object_pairs_hook=_reject_duplicate_keys, parse_constant=_reject_constant)
        except json.JSONDecodeError as exc:
            raise DocumentSyntaxError([Problem("", f"invalid JSON: {exc.msg}", exc.lineno, exc.colno)]) from None
        except ValueError as exc:  # an integer past Python's 4,300-digit conversion limit
            raise _syntax(f"invalid JSON: {_too_long(exc)}") from None
        except RecursionError:
            raise _syntax(f"nesting deeper than {MAX_DEPTH} levels") from None
    else:
        _check_events(text)
        loader = _WorkflowLoader(text)
        try:
            value = loader.get_single_data()
        except yaml.YAMLError as exc:
            raise _syntax(f"invalid YAML: {exc}") from None
        except ValueError as exc:  # an integer past Python's 4,300-digit conversion limit
            raise _syntax(f"invalid YAML: {_too_long(exc)}") from None
        finally:
            loader.dispose()
    _check_values(value)
    return value


def _path(parts: Any) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


#: where each node of a document stands: path (keys and indexes) -> (key node, value node)
Nodes = dict[tuple[Any, ...], tuple[Any, Any]]


def _nodes(text: str) -> Nodes:
    """The YAML node tree of ``text`` (JSON is read as YAML too), for the marks of its nodes; only
    made when a document has problems, so a valid one is parsed once."""
    try:
        root = yaml.compose(text, Loader=_WorkflowLoader)
    except yaml.YAMLError:  # a JSON spelling YAML reads differently: no places, the problems stand
        return {}
    found: Nodes = {}
    todo: list[tuple[tuple[Any, ...], Any, Any]] = [((), None, root)]
    while todo:
        path, key, node = todo.pop()
        found[path] = (key, node)
        if isinstance(node, yaml.MappingNode):
            todo += [((*path, k.value), k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode)]
        elif isinstance(node, yaml.SequenceNode):
            todo += [((*path, i), None, v) for i, v in enumerate(node.value)]
    return found


def _at(nodes: Nodes, parts: Any, key: bool = False) -> tuple[int | None, int | None]:
    """Line and column (from 1) of the value at ``parts``, or of its key; the nearest enclosing
    node when the path is not in the tree (a missing key is reported at its mapping)."""
    parts = tuple(parts)
    while parts not in nodes and parts:
        parts = parts[:-1]
    if parts not in nodes:
        return None, None
    key_node, node = nodes[parts]
    mark = (key_node if key and key_node is not None else node).start_mark
    return mark.line + 1, mark.column + 1


def _source(nodes: Nodes, parts: Any) -> str | None:
    """The value as written (``150.00``, not the float 150.0 it became)."""
    entry = nodes.get(tuple(parts))
    return entry[1].value if entry and isinstance(entry[1], yaml.ScalarNode) else None


def _problem(nodes: Nodes, parts: Any, message: str, hint: str | None = None, key: bool = False) -> Problem:
    line, column = _at(nodes, parts, key)
    return Problem(_path(parts), message, line, column, hint)


_DECIMAL_COMMA = re.compile(r"^[0-9]+,[0-9]+$")


def _problems(error: ValidationError, nodes: Nodes | None = None) -> list[Problem]:  # noqa: C901 - one branch per kind
    nodes = nodes or {}
    parts = list(error.absolute_path)
    kind = error.validator
    if kind == "additionalProperties":
        known = error.schema.get("properties", {})
        allowed = sorted(known)
        out = []
        for name in (k for k in error.instance if k not in known):
            close = difflib.get_close_matches(str(name), allowed, n=1, cutoff=0.75)
            out.append(_problem(nodes, [*parts, name], f"unknown key; allowed here: {', '.join(allowed)}",
                                f"did you mean {close[0]!r}?" if close else None, key=True))
        return out
    if kind == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        line, column = _at(nodes, parts)
        return [Problem(_path([*parts, missing]), "is required", line, column)]
    if kind == "anyOf" and all(sub.validator == "required" for sub in error.context):
        names = [sub.validator_value[0] for sub in error.context]
        return [_problem(nodes, parts, f"needs one of {', '.join(names)}")]
    if kind in ("oneOf", "anyOf") and error.context:
        return _alternatives(error, nodes)
    if kind == "format" and error.validator_value == "email":
        return [_problem(nodes, parts, f"{_short(error.instance)} is not an email")]
    if kind == "format" and error.validator_value == "mailbox":
        return [_problem(nodes, parts, f"{_short(error.instance)} is not an address or Name <address>")]
    if kind == "pattern":
        hint = error.parent.schema.get("description") if error.parent else None
        described = error.schema.get("description") if isinstance(error.schema, dict) else None
        comma = isinstance(error.instance, str) and _DECIMAL_COMMA.fullmatch(error.instance)
        fix = f'write a decimal point: "{error.instance.replace(",", ".")}"' if comma else None
        if described or hint:  # the words the schema has for it, not its regular expression
            return [_problem(nodes, parts, f"{_short(error.instance)} is not valid here: {described or hint}", fix)]
        return [_problem(nodes, parts, f"{_short(error.instance)} does not match {error.validator_value!r}", fix)]
    if kind == "const":
        return [_problem(nodes, parts, f"must be {_short(error.validator_value)}, got {_short(error.instance)}")]
    if kind == "enum":
        choices = ", ".join(_short(v) for v in error.validator_value)
        return [_problem(nodes, parts, f"{_short(error.instance)} is not one of {choices}")]
    if kind == "type":
        fix = None
        if error.validator_value == "string" and isinstance(error.instance, int | float) \
                and not isinstance(error.instance, bool):
            written = _source(nodes, parts) or _short(error.instance)
            fix = f'put it in quotes so it stays text: "{written}"'
        return [_problem(nodes, parts, f"must be of type {error.validator_value}, got {_short(error.instance)}", fix)]
    return [_problem(nodes, parts, error.message)]


def _alternatives(error: ValidationError, nodes: Nodes) -> list[Problem]:
    """Explain a failed oneOf/anyOf by the branch whose type fits the value, if one does."""
    branches: dict[int, list[ValidationError]] = {}
    for sub in error.context:
        branches.setdefault(sub.relative_schema_path[0], []).append(sub)
    fitting = [
        errors for errors in branches.values()
        if not any(e.validator == "type" and not e.relative_path for e in errors)
    ]
    if len(fitting) == 1:
        return [problem for sub in fitting[0] for problem in _problems(sub, nodes)]
    return _problems(best_match(error.context), nodes)


_PATH_PART = re.compile(r"\[(\d+)\]|([^.\[\]]+)")


def _placed(problems: list[Problem], nodes: Nodes) -> list[Problem]:
    """Line and column for problems found beside the schema (amounts, steps), where their path
    names a node of the document (``inputs`` of a request, for one, does not)."""
    out = []
    for problem in problems:
        parts = tuple(int(i) if i else key for i, key in _PATH_PART.findall(problem.path))
        if problem.line is None and parts in nodes:
            line, column = _at(nodes, parts)
            problem = replace(problem, line=line, column=column)
        out.append(problem)
    return out


def _typos_for_required(problems: list[Problem]) -> list[Problem]:
    """``paylod:`` is one slip, not two: a missing key that an unknown key beside it is one typo
    away from is said once, at the typo ("did you mean 'payload'?")."""
    meant = {(p.path.rpartition(".")[0], p.hint.split("'")[1]) for p in problems
             if p.hint and p.hint.startswith("did you mean")}
    return [p for p in problems
            if not (p.message == "is required" and (p.path.rpartition(".")[0], p.path.rpartition(".")[2]) in meant)]


def _semantic_problems(document: dict[str, Any]) -> list[Problem]:
    """Checks a schema cannot express: an amount's precision depends on its currency."""
    payload = document.get("payload", {})
    if document["goal"] == "charge":
        try:
            to_minor_units(payload["amount"], payload["currency"])
        except AmountError as exc:
            return [Problem("payload.amount", str(exc))]
    return []


def normalise(document: dict[str, Any]) -> dict[str, Any]:
    """The canonical form approvals are bound to: defaults filled, case-insensitive values folded."""
    doc = json.loads(json.dumps(document))
    doc.setdefault("type", "workflow" if "steps" in doc else "task")
    payload = doc.get("payload", {})
    if doc.get("goal") == "charge" and isinstance(payload.get("currency"), str):
        payload["currency"] = payload["currency"].upper()
    return doc


def digest(document: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a normalised document."""
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def validate(value: Any, inputs: dict[str, Any] | None = None, source: str | None = None) -> Workflow:
    """Check parsed values against the workflow schema; raise with every problem, sorted by place.
    ``inputs``: the values given for a workflow's ``inputs:`` (only a workflow of steps has them).
    ``source``, the text the values were parsed from, puts each problem's line and column in it."""
    if not isinstance(value, dict):
        kind = "a list" if isinstance(value, list) else type(value).__name__
        raise DocumentError([Problem("", f"a workflow must be a mapping of keys to values, got {kind}", 1, 1)
                             if source is not None else
                             Problem("", f"a workflow must be a mapping of keys to values, got {kind}")])
    errors = [] if surely_valid(value) else list(validator().iter_errors(value))
    nodes = _nodes(source) if errors and source is not None else {}
    problems: list[Problem] = []
    for error in errors:
        for problem in _problems(error, nodes):
            if problem not in problems:
                problems.append(problem)
    problems = _typos_for_required(problems)
    resolved = None
    if not problems and flows.is_flow(value):
        resolved, problems = flows.resolve_inputs(value.get("inputs") or {}, inputs)
        problems += flows.problems(value, resolved) if not problems else []
    elif not problems:
        problems = _semantic_problems(value)
        if inputs:
            problems.append(Problem("inputs", "only a workflow with steps: has inputs"))
    if source is not None and any(p.line is None for p in problems):
        problems = _placed(problems, _nodes(source))
    if problems:
        raise DocumentError(sorted(problems, key=lambda p: (p.line or 0, p.column or 0, p.path, p.message)))
    document = normalise(value)
    if resolved is not None:
        return Workflow(document=document, digest=digest({"document": document, "inputs": resolved}), inputs=resolved)
    return Workflow(document=document, digest=digest(document))


def load(body: bytes | str, *, fmt: str = "yaml", max_bytes: int = 256 * 1024,
         inputs: dict[str, Any] | None = None) -> Workflow:
    """Parse and validate in one call."""
    text = _decode(body, max_bytes)
    return validate(parse(text, fmt=fmt, max_bytes=max_bytes), inputs, source=text)


def refuse_over_ceiling(workflow: Workflow, policy: Any) -> None:
    """A charge above the policy's ceiling (``adapters.stripe.max_amount``) is refused at
    submission, before anyone is asked to approve it."""
    if workflow.goal != "charge":
        return
    payload = workflow.payload
    ceiling = policy.max_charge(payload["currency"])
    if Decimal(str(payload["amount"])) > ceiling:
        raise DocumentError([Problem("payload.amount", f"{payload['amount']} {payload['currency']} is above the "
                                     f"policy's ceiling of {ceiling} {payload['currency']} "
                                     "(adapters.stripe.max_amount)")])
