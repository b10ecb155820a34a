"""Workflows of several steps: the document, its inputs, and everything checked at submit.

A workflow with ``steps:`` is a small graph: each step is one task (a goal and its payload, the
same per-goal schemas as a single-goal workflow), ``needs`` orders them, ``if:`` may skip one, and
strings in a payload are templates over ``inputs`` and earlier steps' outputs
(:mod:`aurora.templating`). At submit, with the inputs given, every problem is found at once: a
``needs`` or template naming a step that does not exist (or is not among the step's needs, so its
output may not be there yet), a cycle, a template that cannot render, and a payload that does not
validate once rendered — rendered against the documented *shape* of each earlier step's output
(:func:`placeholder_output`), since the real outputs do not exist yet. Each step's payload is
rendered and validated again, with the real outputs, before the step acts (``aurora.flow_runs``).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from graphlib import CycleError, TopologicalSorter
from typing import Any

from .errors import DocumentError, Problem
from .templating import MAX_RENDERED, TemplateProblem, budget, is_template, parse, parse_expression, references, render
from .workflow_schema import is_email

#: what ``goal`` a workflow of several steps has in the runs table
FLOW_GOAL = "workflow"
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
#: a number input has fewer digits before its point (as the templates' own ceiling on numbers)
_MAX_DIGITS = 15


@dataclass(frozen=True)
class Step:
    id: str
    goal: str
    payload: dict[str, Any]
    needs: tuple[str, ...]
    condition: str | None
    require_approval: bool
    attempts: int
    backoff: float
    timeout: int | None
    index: int

    @classmethod
    def of(cls, raw: dict[str, Any], index: int) -> Step:
        retry = raw.get("retry") or {}
        return cls(raw["id"], raw["goal"], raw["payload"], tuple(raw.get("needs") or ()), raw.get("if"),
                   bool(raw.get("require_approval")), int(retry.get("attempts", 1)), float(retry.get("backoff", 0)),
                   raw.get("timeout"), index)


def is_flow(value: Any) -> bool:
    return isinstance(value, dict) and "steps" in value


def steps_of(document: dict[str, Any]) -> list[Step]:
    return [Step.of(raw, index) for index, raw in enumerate(document["steps"])]


def order(steps: list[Step]) -> list[str]:
    """Step ids in an order where every step comes after its needs (raises CycleError)."""
    sorter = TopologicalSorter({step.id: step.needs for step in steps})
    return list(sorter.static_order())


def ancestors(steps: dict[str, Step], step_id: str) -> set[str]:
    """Every step that must have finished before ``step_id`` starts (its needs, theirs, …)."""
    seen: set[str] = set()
    todo = list(steps[step_id].needs)
    while todo:
        current = todo.pop()
        if current not in seen and current in steps:
            seen.add(current)
            todo.extend(steps[current].needs)
    return seen


# -- inputs -----------------------------------------------------------------------------------

def resolve_inputs(declared: dict[str, Any], given: dict[str, Any] | None) -> tuple[dict[str, Any], list[Problem]]:
    """The inputs a run gets: the given values (text from a command line converted by the declared
    type), defaults for the rest; every unknown, missing or ill-typed input is a problem."""
    given = dict(given or {})
    values: dict[str, Any] = {}
    problems: list[Problem] = []
    for name in sorted(set(given) - set(declared)):
        known = ", ".join(sorted(declared)) or "none"
        problems.append(Problem(f"inputs.{name}", f"this workflow has no input {name!r} (its inputs: {known})"))
    for name, spec in declared.items():
        if name in given:
            value, message = _convert(given[name], spec)
            if message:
                problems.append(Problem(f"inputs.{name}", message))
                continue
        elif "default" in spec:
            value, message = _convert(spec["default"], spec)  # a default must fit its own declaration
            if message:
                problems.append(Problem(f"inputs.{name}", f"its default {message}"))
                continue
        else:
            problems.append(Problem(f"inputs.{name}", "is required: give it with --input "
                                    f"{name}=… (or in the request's \"inputs\")"))
            continue
        values[name] = value
    return values, problems


def _convert(value: Any, spec: dict[str, Any]) -> tuple[Any, str | None]:
    kind = spec.get("type", "string")
    if kind == "boolean":
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            value = value.lower() in _TRUE
        if not isinstance(value, bool):
            return None, f"must be true or false, got {json.dumps(value)[:40]}"
    elif kind in ("integer", "number"):
        if isinstance(value, str):
            try:
                number = Decimal(value.strip())
            except InvalidOperation:
                return None, f"must be a number, got {value[:40]!r}"
            if not number.is_finite():
                return None, "must be a finite number"
            if number.adjusted() >= _MAX_DIGITS:  # before int(): "1e300000" would compute 10 ** 300000
                return None, f"must be less than 10^{_MAX_DIGITS} in size"
            value = int(number) if number == number.to_integral_value() else float(number)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None, f"must be a number, got {json.dumps(value)[:40]}"
        if not math.isfinite(value) or abs(value) >= 10**_MAX_DIGITS:
            return None, f"must be a finite number less than 10^{_MAX_DIGITS} in size"
        if kind == "integer" and not float(value).is_integer():
            return None, f"must be a whole number, got {value}"
        if kind == "integer":
            value = int(value)
    else:
        if not isinstance(value, str):
            return None, f"must be text, got {json.dumps(value)[:40]}"
        # at most what one template may render, unless declared shorter
        if len(value) > spec.get("maxLength", MAX_RENDERED):
            return None, f"may be {spec.get('maxLength', MAX_RENDERED)} characters long, got {len(value)}"
        if spec.get("format") == "email" and not is_email(value):
            return None, f"{value[:60]!r} is not an email address"
    if "enum" in spec and value not in spec["enum"]:
        return None, f"must be one of {', '.join(json.dumps(v) for v in spec['enum'])}"
    return value, None


# -- outputs ----------------------------------------------------------------------------------

def output_of(goal: str, result: dict[str, Any] | None) -> dict[str, Any]:
    """What later steps see of a finished step: a small, documented shape per goal (docs/steps.md).
    A simulated step has the same shape, saying that it was simulated."""
    result = result or {}
    response = result.get("response") or {}
    simulated = result.get("mode") != "live"
    out: dict[str, Any] = {"mode": result.get("mode", "simulated"), "simulated": simulated,
                           "message": result.get("msg", "")}
    if goal == "analyse":
        engine = result.get("engine")
        if simulated or not response.get("text"):
            question = _question(result)
            out["text"] = f"[simulated analysis by {engine or 'an engine'}: no engine was asked] {question}"
        else:
            out["text"] = response["text"]
        out["engine"] = engine
    elif goal == "send_email":
        out["id"] = response.get("id")
        out["to"] = ((result.get("request") or {}).get("form") or {}).get("to")
    elif goal == "post_external":
        out["id"] = response.get("id")
    elif goal == "charge":
        out["payment_intent"] = response.get("id")
        out["status"] = response.get("status", "simulated" if simulated else None)
    elif goal == "ingest_forms":
        out["responses"] = result.get("responses", result.get("count", 0))
    return out


def _question(result: dict[str, Any]) -> str:
    messages = (((result.get("request") or {}).get("json") or {}).get("messages")) or [{}]
    return str(messages[-1].get("content", ""))[:500]


def placeholder_output(goal: str) -> dict[str, Any]:
    """The shape of a step's output before it ran: what templates are checked against at submit."""
    return output_of(goal, {"mode": "simulated", "msg": "(not run yet)", "engine": "perplexity",
                            "request": {"json": {"messages": [{"content": "(the question)"}]},
                                        "form": {"to": ["someone@example.com"]}}})


def context(inputs: dict[str, Any], outputs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What templates and conditions see: ``inputs.<name>`` and ``steps.<id>.output|status``."""
    return {"inputs": dict(inputs), "steps": {sid: dict(value) for sid, value in outputs.items()}}


# -- rendering --------------------------------------------------------------------------------

def render_payload(payload: Any, ctx: dict[str, Any], path: str) -> tuple[Any, list[Problem]]:
    """Every template string in ``payload`` rendered; problems carry the string's path."""
    problems: list[Problem] = []

    def walk(value: Any, where: str) -> Any:
        if isinstance(value, dict):
            return {key: walk(item, f"{where}.{key}") for key, item in value.items()}
        if isinstance(value, list):
            return [walk(item, f"{where}[{index}]") for index, item in enumerate(value)]
        if is_template(value):
            try:
                return render(value, ctx)
            except TemplateProblem as exc:
                problems.append(Problem(where, str(exc)))
                return value
        return value

    return walk(payload, path), problems


def task_document(flow_name: str, step: Step, payload: dict[str, Any]) -> dict[str, Any]:
    """The single-goal document a step runs as (validated like any submitted task)."""
    payload = dict(payload)
    if step.require_approval:
        payload["require_approval"] = True
    return {"name": f"{flow_name}.{step.id}"[:128], "category": "step", "origin": "workflow", "type": "task",
            "goal": step.goal, "payload": payload}


def step_task_problems(flow_name: str, step: Step, payload: dict[str, Any], where: str) -> list[Problem]:
    from .documents import validate

    try:
        validate(task_document(flow_name, step, payload))
    except DocumentError as exc:
        return [Problem(f"{where}{p.path[len('payload'):]}" if p.path.startswith("payload") else where, p.message)
                for p in exc.problems]
    return []


# -- the checks at submit ---------------------------------------------------------------------

def problems(document: dict[str, Any], inputs: dict[str, Any]) -> list[Problem]:
    """Everything wrong with a schema-valid flow document and these resolved inputs (its
    templates share one allowance of work: ``templating.budget``)."""
    with budget():
        return _problems(document, inputs)


def _problems(document: dict[str, Any], inputs: dict[str, Any]) -> list[Problem]:
    found: list[Problem] = []
    steps = steps_of(document)
    by_id: dict[str, Step] = {}
    for step in steps:
        if step.id in by_id:
            found.append(Problem(f"steps[{step.index}].id", f"a second step with the id {step.id!r}"))
        by_id.setdefault(step.id, step)
    for step in steps:
        for n, need in enumerate(step.needs):
            if need == step.id:
                found.append(Problem(f"steps[{step.index}].needs[{n}]", "a step cannot need itself"))
            elif need not in by_id:
                found.append(Problem(f"steps[{step.index}].needs[{n}]", _unknown(need, by_id)))
    if found:
        return found
    try:
        order(list(by_id.values()))
    except CycleError as exc:
        cycle = exc.args[1] if len(exc.args) > 1 else []
        return [Problem("steps", f"the steps' needs form a cycle: {' -> '.join(cycle)}")]
    for step in steps:
        found += _step_problems(document["name"], step, by_id, inputs)
    return found


def _step_problems(flow_name: str, step: Step, by_id: dict[str, Step], inputs: dict[str, Any]) -> list[Problem]:
    where = f"steps[{step.index}]"
    before = ancestors(by_id, step.id)
    found: list[Problem] = []
    sources: list[tuple[str, Any]] = [(f"{where}.if", step.condition)] if step.condition else []
    sources += _templates(step.payload, f"{where}.payload")
    for path, source in sources:
        try:
            tree = parse_expression(source) if path.endswith(".if") else parse(source)
        except TemplateProblem as exc:
            found.append(Problem(path, str(exc)))
            continue
        refs = sorted(references(tree))
        for ref in refs:
            message = _reference_problem(ref, by_id, before, inputs)
            if message:
                found.append(Problem(path, message))
        steered = _steered_by_output(step, path[len(f"{where}.payload."):], refs)
        if steered:
            found.append(Problem(path, steered))
    if found:
        return found
    ctx = context(inputs, {sid: {"output": placeholder_output(by_id[sid].goal), "status": "succeeded"}
                           for sid in before})
    if step.condition:
        from .templating import evaluate

        try:
            evaluate(step.condition, ctx)
        except TemplateProblem as exc:
            found.append(Problem(f"{where}.if", str(exc)))
    rendered, render_problems = render_payload(step.payload, ctx, f"{where}.payload")
    found += render_problems
    if not render_problems:
        found += step_task_problems(flow_name, step, rendered, f"{where}.payload")
    return found


#: payload fields that say where a step's effect goes, not what it says
DESTINATIONS = {"send_email": ("to", "from", "reply_to", "adapter")}


def _steered_by_output(step: Step, field_path: str, refs: list[tuple[str, ...]]) -> str | None:
    """An earlier step's output is text nobody reviewed — an AI engine's answer may carry
    instructions planted in what it read. It may fill what a mail says, but not choose where the
    mail goes, unless people see the rendered address first (``require_approval``). Critical
    goals always wait for a quorum that sees the rendered request."""
    field = re.split(r"[.\[]", field_path, maxsplit=1)[0]
    if step.require_approval or field not in DESTINATIONS.get(step.goal, ()):
        return None
    used = sorted({".".join(ref[:2]) for ref in refs if ref[0] == "steps" and len(ref) > 1})
    if not used:
        return None
    return (f"{field} is taken from {', '.join(used)}: an earlier step's output (an AI engine's answer, say) "
            f"cannot choose where a mail goes; use an input, or add require_approval: true so people "
            f"see the rendered {field} before it is sent")


def _templates(value: Any, path: str) -> list[tuple[str, str]]:
    if isinstance(value, dict):
        return [t for key, item in value.items() for t in _templates(item, f"{path}.{key}")]
    if isinstance(value, list):
        return [t for index, item in enumerate(value) for t in _templates(item, f"{path}[{index}]")]
    return [(path, value)] if is_template(value) else []


def _reference_problem(ref: tuple[str, ...], by_id: dict[str, Step], before: set[str],
                       inputs: dict[str, Any]) -> str | None:
    root = ref[0]
    if root == "inputs":
        if len(ref) > 1 and ref[1] not in inputs:
            return f"inputs.{ref[1]} is not an input of this workflow" + _suggest(ref[1], inputs)
        return None
    if root == "steps":
        if len(ref) < 2:
            return None
        sid = ref[1]
        if sid not in by_id:
            return f"steps.{sid}: {_unknown(sid, by_id)}"
        if sid not in before:
            return f"steps.{sid} is not among this step's needs (add it to needs: its output must exist first)"
        if len(ref) > 2 and ref[2] not in ("output", "status"):
            return f"steps.{sid}.{ref[2]}: a step has output and status"
        shape = placeholder_output(by_id[sid].goal)
        if len(ref) > 3 and ref[2] == "output" and ref[3] not in shape:
            return (f"steps.{sid}.output has no field {ref[3]!r}: the output of a {by_id[sid].goal} step has "
                    f"{', '.join(shape)}" + _suggest(ref[3], shape))
        return None
    return f"{root!r} is unknown in a template; use inputs.<name> or steps.<id>.output.<field>"


def _unknown(name: str, by_id: dict[str, Any]) -> str:
    return f"there is no step {name!r}" + _suggest(name, by_id)


def _suggest(name: str, known: dict[str, Any]) -> str:
    from difflib import get_close_matches

    close = get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
