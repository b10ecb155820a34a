"""JSON Schema validators whose ``pattern`` means what the schema says.

JSON Schema patterns are ECMA-262 regular expressions, where ``$`` (without the ``m`` flag)
matches only at the very end of the string. jsonschema runs them with Python's ``re``, whose ``$``
also matches before a final newline, so ``^cus_[A-Za-z0-9]{1,64}$`` let ``"cus_123\\n"`` through.
Here a ``$`` outside a character class becomes ``\\Z`` before compiling: the ECMA meaning, for
every pattern in every schema, without writing Python-only syntax into the schema files.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cache
from typing import Any

from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError


@cache
def ecma(pattern: str) -> re.Pattern[str]:
    """Compile a JSON Schema pattern with ECMA's ``$``: the end of the string, nothing else."""
    out, escaped, in_class = [], False, False
    for char in pattern:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "[" and not in_class:
            in_class = True
        elif char == "]" and in_class:
            in_class = False
        elif char == "$" and not in_class:
            out.append(r"\Z")
            continue
        out.append(char)
    return re.compile("".join(out))


def _pattern(validator: Any, pattern: str, instance: Any, schema: dict[str, Any]) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not ecma(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


#: Draft 2020-12 with ECMA-anchored patterns
Validator = validators.extend(Draft202012Validator, {"pattern": _pattern})


def inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with every subschema that is only ``{"$ref": "#/$defs/<name>"}`` replaced by a
    copy of that definition: the same checks and the same errors, without resolving a reference
    at every validation (jsonschema looks each one up anew: a fifth of a workflow's validation).
    A definition that refers to itself, directly or not, or sets its own ``$id``, stays a ``$ref``."""
    definitions = schema.get("$defs", {})

    def walk(node: Any, within: frozenset[str]) -> Any:
        if isinstance(node, list):
            return [walk(item, within) for item in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if len(node) == 1 and isinstance(ref, str) and ref.startswith("#/$defs/"):
            name = ref[len("#/$defs/"):]
            target = definitions.get(name)
            if isinstance(target, dict) and name not in within and "$id" not in target:
                return walk(target, within | {name})
        return {key: walk(value, within) for key, value in node.items()}

    return walk(schema, frozenset())
