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

import functools
import operator
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cache, lru_cache
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateError, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.filters import do_round
from jinja2.parser import Parser
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from .errors import AuroraError

#: longest template source, and longest text one template may render
MAX_TEMPLATE = 4_000
MAX_RENDERED = 20_000
#: deepest nesting of a template's expression (brackets, operators, filters): Jinja's parser,
#: its compiler and Python's own compiler recurse once per level, and their limits (a
#: RecursionError, a SyntaxError) must never be reached by what a submitter wrote
MAX_DEPTH = 40
#: most digits ``round`` may keep: ``round(10**7, "floor")`` would compute 10**(10**7)
MAX_ROUND_PRECISION = 15
#: the work templates may do, in characters that filters read and operators build: one
#: workflow's checks at submit share it (thousands of small templates, each reading a long
#: input, would otherwise keep the web process busy for minutes), and so does one step's rendering
MAX_WORK = 10_000_000
#: ``striptags`` reads its input in a Python loop, tag by tag: many times slower than the others
_WEIGHT = {"striptags": 10}
_work: ContextVar[list[int] | None] = ContextVar("aurora_template_work", default=None)


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


def _size(value: Any, budget: int = MAX_RENDERED + 1) -> int:
    """About how many characters ``value`` renders to, counted no further than ``budget``: a
    list repeated inside a list (``[[1] * 20000] * 20000``) is small in memory and huge as text."""
    total, todo = 0, [value]
    while todo and total < budget:
        current = todo.pop()
        if isinstance(current, str):
            total += len(current)
        elif isinstance(current, (list, tuple)):
            total += 2 + len(current)
            todo.extend(current)
        elif isinstance(current, dict):
            total += 2 + len(current)
            todo.extend(current.keys())
            todo.extend(current.values())
        else:
            total += 1
    return total


class _Generator(CodeGenerator):
    """``a ~ b`` through :meth:`_Sandbox.concat`, which caps what it builds (Jinja joins directly)."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _Sandbox(ImmutableSandboxedEnvironment):
    code_generator_class = _Generator
    intercepted_binops = frozenset({"*", "+"})

    def call_binop(self, context: Any, operator_name: str, left: Any, right: Any) -> Any:
        if operator_name == "*" and any(isinstance(v, (int, float)) and abs(v) > 10**15 for v in (left, right)):
            raise SecurityError("numbers that large are not allowed")
        sequences = [v for v in (left, right) if isinstance(v, (str, list, tuple))]
        if sequences and operator_name == "*":
            times = next((v for v in (left, right) if isinstance(v, int)), 1)
            if _size(sequences[0]) * max(times, 0) > MAX_RENDERED:
                raise SecurityError("a repetition that large is not allowed")
        elif sequences and _size(left) + _size(right) > MAX_RENDERED:
            raise SecurityError(f"a value of more than {MAX_RENDERED} characters is not allowed")
        result = operator.mul(left, right) if operator_name == "*" else operator.add(left, right)
        _charge(_size(result))
        return result

    def concat(self, values: tuple[Any, ...]) -> str:
        text = "".join(map(str, values))
        if len(text) > MAX_RENDERED:
            raise SecurityError(f"a value of more than {MAX_RENDERED} characters is not allowed")
        _charge(len(text))
        return text


def _round(value: Any, precision: int = 0, method: str = "common") -> float:
    if not isinstance(precision, int) or not 0 <= precision <= MAX_ROUND_PRECISION:
        raise SecurityError(f"round: the precision must be a whole number from 0 to {MAX_ROUND_PRECISION}")
    return do_round(value, precision, method)


@contextmanager
def budget(limit: int = MAX_WORK) -> Iterator[None]:
    """Templates rendered inside share one allowance of work (:data:`MAX_WORK`)."""
    token = _work.set([limit])
    try:
        yield
    finally:
        _work.reset(token)


def _charge(amount: int) -> None:
    left = _work.get()
    if left is not None:
        left[0] -= amount
        if left[0] < 0:
            raise SecurityError(f"the templates do too much work (filters reading or operators building more "
                                f"than {MAX_WORK} characters in all)")


def _charged(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """A filter that first charges what it reads (its value) to the current :func:`budget`."""
    weight = _WEIGHT.get(name, 1)
    passes_context = getattr(function, "jinja_pass_arg", None) is not None  # then the value is second

    @functools.wraps(function)  # keeps jinja_pass_arg: Jinja passes the same arguments
    def charged(*args: Any, **kwargs: Any) -> Any:
        value = args[1] if passes_context else args[0]
        _charge(weight * _size(value, MAX_WORK))
        return function(*args, **kwargs)

    return charged


def _depth(tree: nodes.Node) -> int:
    """How deeply the tree nests (counted without recursing: the tree may be deep)."""
    deepest, todo = 0, [(tree, 1)]
    while todo:
        node, depth = todo.pop()
        deepest = max(deepest, depth)
        todo.extend((child, depth + 1) for child in node.iter_child_nodes())
    return deepest


def _check_nodes(tree: nodes.Node, what: str) -> None:
    if _depth(tree) > MAX_DEPTH:
        raise TemplateProblem(f"a {what} may nest {MAX_DEPTH} levels deep (brackets, operators, filters)")
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
    env.filters = {name: _charged(name, _round if name == "round" else env.filters[name]) for name in FILTERS}
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
    except RecursionError:
        raise TemplateProblem(f"a template may nest {MAX_DEPTH} levels deep (brackets, operators, filters)") from None
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
    """Render one template string, or raise :class:`TemplateProblem` saying why not (under the
    current :func:`budget`, or one of its own)."""
    if _work.get() is None:
        with budget():
            return render(source, context)
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
    if _work.get() is None:
        with budget():
            return evaluate(expression, context)
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
    except RecursionError:
        raise TemplateProblem(f"a condition may nest {MAX_DEPTH} levels deep (brackets, operators, filters)") from None
    _check_nodes(tree, "condition")
    return tree


def _undefined_message(exc: TemplateError) -> str:
    message = exc.message or str(exc)
    return message.replace("jinja2.", "")
