"""The workflow schema as it is checked: its two formats, the jsonschema validator that names every
problem of a document, and the same schema compiled by jsonschema-rs, which only says *yes*, fast.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker

from .resources import load_schema
from .schema_patterns import Validator, inlined

_EMAIL = re.compile(r"^[^@\s<>(),;:\"\[\]\x00-\x1f\x7f]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$")
#: ``Display Name <address>``: a display name without angle brackets, quotes or line breaks
_MAILBOX = re.compile(r'([^<>",;\r\n\x00-\x1f]{1,200}) <([^<>\s]+)>')


def is_email(value: str) -> bool:
    """An address as the schema's ``email`` format takes it (a workflow's inputs check the same)."""
    # fullmatch: ``$`` in match() would accept a trailing newline (a header injection)
    return bool(_EMAIL.fullmatch(value))


def _email_format(value: object) -> bool:
    return not isinstance(value, str) or is_email(value)


def _mailbox_format(value: object) -> bool:
    """``shop@example.com`` or ``Shop <shop@example.com>`` (RFC 5322's name-addr, without
    comments or groups): a display name holds no angle brackets, quotes or line breaks."""
    if not isinstance(value, str):
        return True
    if _EMAIL.fullmatch(value):
        return True
    found = _MAILBOX.fullmatch(value)
    return bool(found and _EMAIL.fullmatch(found.group(2)))


@cache
def validator() -> Draft202012Validator:
    checker = FormatChecker(formats=())
    checker.checks("email")(_email_format)
    checker.checks("mailbox")(_mailbox_format)
    return Validator(inlined(load_schema("workflow.schema.json")), format_checker=checker)


#: the formats the schema's validator checks (any other, ``uri`` say, is only an annotation there)
_FORMATS = {"email": _email_format, "mailbox": _mailbox_format, "uri": lambda _value: True}


@cache
def compiled() -> Any:
    """The same schema compiled by jsonschema-rs: it only says whether a document is valid, in
    ~12 µs where the validator above takes 300–500 µs (a workflow step is validated again after
    rendering, in the worker's write transaction: bench/steps.py). Only its *yes* is taken: a
    document it refuses (or cannot read: a YAML date, a lone surrogate) goes to the validator
    above, which names every problem and has the last word. Patterns mean the same in both: the
    Rust engines' ``$`` is ECMA's (the end of the string), as ``schema_patterns`` makes it in
    Python; tests/test_documents.py checks that it refuses what the other refuses."""
    import jsonschema_rs

    return jsonschema_rs.Draft202012Validator(load_schema("workflow.schema.json"), formats=_FORMATS,
                                             validate_formats=True, offline=True)


def surely_valid(value: Any) -> bool:
    try:
        return bool(compiled().is_valid(value))
    except (ValueError, TypeError, OverflowError, UnicodeError):  # a value it cannot take: ask the other
        return False
