"""Templates in step payloads: Jinja2's immutable sandbox, and nothing else.

A workflow's later steps use earlier outputs and the inputs: ``text: "{{ steps.research.output.text }}"``.
Templates come from whoever may submit a workflow, so they are untrusted code. They are rendered by
Jinja2's :class:`~jinja2.sandbox.ImmutableSandboxedEnvironment` (no attribute starting with ``_``, no
method that changes a value, no ``str.format`` escape), with no loader (``include``/``import``/
``extends`` find nothing), no globals (no ``range``, ``cycler``, ``joiner``, ``lipsum``, ``dict``),
strict undefined (a misspelt reference is an error, not an empty string), and ceilings on the size
of a template, of what it renders, and of ``*``/``**`` (``"x" * 10**9`` would otherwise fill the
memory). Nothing in it can run code, read a file or reach the network.
"""

from __future__ import annotations

import operator
from functools import cache, lru_cache
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateError, nodes
from jinja2.parser import Parser
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from .errors import AuroraError

#: longest template source, and longest text one template may render
MAX_TEMPLATE = 4_000
MAX_RENDERED = 20_000


class TemplateProblem(AuroraError):
    """A template that cannot be parsed, refers to what does not exist, or broke a sandbox rule."""

    code = "template_error"


#: the filters a template may use: none of them can make a value much larger than its input
FILTERS = ("abs", "capitalize", "d", "default", "first", "float", "int", "join", "last", "length", "count",
           "lower", "round", "string", "striptags", "title", "tojson", "trim", "truncate", "upper", "wordcount")
#: what a template may contain: expressions, ``if``/``else`` and the filters above. No loops (a
#: nested loop over a long input is a CPU bomb), no calls (``"a".center(10**9)`` is a memory bomb,
#: ``.format`` an escape), no assignments, macros, includes or blocks.
_ALLOWED_NODES = (
    nodes.Template, nodes.Output, nodes.TemplateData, nodes.If, nodes.CondExpr, nodes.Name, nodes.Getattr,
    nodes.Getitem, nodes.Slice, nodes.Const, nodes.List, nodes.Tuple, nodes.Dict, nodes.Pair, nodes.Filter,
    nodes.Test, nodes.Keyword, nodes.Compare, nodes.Operand, nodes.And, nodes.Or, nodes.Not, nodes.Neg,
    nodes.Pos, nodes.Concat, nodes.Add, nodes.Sub, nodes.Mul, nodes.Div, nodes.FloorDiv,
)


class _Sandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*"})

    def call_binop(self, context: Any, operator_name: str, left: Any, right: Any) -> Any:
        sizes = [len(v) if isinstance(v, (str, list, tuple)) else abs(v) if isinstance(v, (int, float)) else 0
                 for v in (left, right)]
        if sizes[0] * sizes[1] > MAX_RENDERED and any(isinstance(v, (str, list, tuple)) for v in (left, right)):
            raise SecurityError("a repetition that large is not allowed")
        if any(isinstance(v, (int, float)) and abs(v) > 10**15 for v in (left, right)):
            raise SecurityError("numbers that large are not allowed")
        return operator.mul(left, right)


def _check_nodes(tree: nodes.Node, what: str) -> None:
    for node in tree.find_all(nodes.Node):
        if not isinstance(node, _ALLOWED_NODES):
            kind = {"For": "loops", "Call": "calls", "Assign": "assignments", "Macro": "macros",
                    "Include": "includes", "Import": "imports", "FromImport": "imports", "Extends": "extends",
                    "Block": "blocks", "Mod": "the % operator", "Pow": "the ** operator"}.get(
                        type(node).__name__, type(node).__name__)
            raise TemplateProblem(f"a {what} may not use {kind} (only expressions, if/else and filters)")
        if isinstance(node, nodes.Filter) and node.name not in FILTERS:
            raise TemplateProblem(f"the filter {node.name!r} is not allowed; allowed: {', '.join(FILTERS)}")


@cache
def environment() -> _Sandbox:
    env = _Sandbox(undefined=StrictUndefined, autoescape=False, loader=None, keep_trailing_newline=True)
    env.globals.clear()
    env.filters = {name: env.filters[name] for name in FILTERS}
    return env


def is_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value or "{#" in value)


def parse(source: str) -> nodes.Template:
    if len(source) > MAX_TEMPLATE:
        raise TemplateProblem(f"a template may be {MAX_TEMPLATE} characters long; this one is {len(source)}")
    try:
        tree = environment().parse(source)
    except TemplateError as exc:
        raise TemplateProblem(f"template syntax: {exc.message}") from None
    _check_nodes(tree, "template")
    return tree


def references(tree: nodes.Node) -> set[tuple[str, ...]]:
    """The dotted names a template reads: ``('steps', 'research', 'output', 'text')``, ``('inputs', 'x')``
    (attribute and constant-subscript chains from a name, as far as they go)."""
    found: set[tuple[str, ...]] = set()
    inner: set[int] = set()
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        inner.add(id(node.node))
    for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Name)):
        if id(node) in inner:
            continue
        chain: list[str] = []
        current: Any = node
        while isinstance(current, (nodes.Getattr, nodes.Getitem)):
            if isinstance(current, nodes.Getattr):
                chain.append(current.attr)
            elif isinstance(current.arg, nodes.Const) and isinstance(current.arg.value, str):
                chain.append(current.arg.value)
            else:
                chain.clear()  # a computed subscript: only the part before it is known
            current = current.node
        if isinstance(current, nodes.Name) and current.ctx == "load":
            found.add((current.name, *reversed(chain)))
    return found


@lru_cache(maxsize=1024)
def _compiled(source: str) -> Template:
    parse(source)  # the node check first: what is compiled has passed it
    return environment().from_string(source)


def render(source: str, context: dict[str, Any]) -> str:
    """Render one template string, or raise :class:`TemplateProblem` saying why not."""
    try:
        template = _compiled(source)
    except TemplateError as exc:
        raise TemplateProblem(f"template syntax: {exc.message}") from None
    try:
        text = template.render(context)
    except SecurityError as exc:
        raise TemplateProblem(f"not allowed in a template: {exc}") from None
    except TemplateError as exc:
        raise TemplateProblem(_undefined_message(exc)) from None
    except (ArithmeticError, TypeError, ValueError, RecursionError) as exc:
        raise TemplateProblem(f"the template failed: {exc.__class__.__name__}: {exc}") from None
    if len(text) > MAX_RENDERED:
        raise TemplateProblem(f"the template renders {len(text)} characters; at most {MAX_RENDERED} are allowed")
    return text


def evaluate(expression: str, context: dict[str, Any]) -> bool:
    """An ``if:`` condition: a Jinja expression over inputs and earlier steps, true or false."""
    parse_expression(expression)
    try:
        compiled = environment().compile_expression(expression, undefined_to_none=False)
        return bool(compiled(**context))
    except SecurityError as exc:
        raise TemplateProblem(f"not allowed in a condition: {exc}") from None
    except TemplateError as exc:
        raise TemplateProblem(_undefined_message(exc)) from None
    except (ArithmeticError, TypeError, ValueError, RecursionError) as exc:
        raise TemplateProblem(f"the condition failed: {exc.__class__.__name__}: {exc}") from None


def parse_expression(expression: str) -> nodes.Node:
    """The expression's tree, parsed as ``compile_expression`` parses it (a condition is one
    expression: nothing may follow it)."""
    if len(expression) > MAX_TEMPLATE:
        raise TemplateProblem(f"a condition may be {MAX_TEMPLATE} characters long")
    try:
        parser = Parser(environment(), expression, state="variable")
        tree = parser.parse_expression()
        if not parser.stream.eos:
            raise TemplateProblem("a condition is one expression; something follows it")
    except TemplateError as exc:
        raise TemplateProblem(f"condition syntax: {exc.message}") from None
    _check_nodes(tree, "condition")
    return tree


def _undefined_message(exc: TemplateError) -> str:
    message = exc.message or str(exc)
    return message.replace("jinja2.", "")
