"""Workflow documents: the seed's examples pass; every kind of bad input is named precisely."""

from __future__ import annotations

from pathlib import Path

import pytest

from aurora import documents, workflow_schema
from aurora.errors import DocumentError, DocumentSyntaxError, DocumentTooLarge

ROOT = Path(__file__).resolve().parent.parent
MAIL = """name: send_report
goal: send_email
payload:
  to: kunde@example.com
  subject: Monatsbericht
  template: monthly_report
"""


def problems(body: str | bytes, **kwargs) -> list[str]:
    with pytest.raises(DocumentError) as info:
        documents.load(body, **kwargs)
    return [f"{p.path}: {p.message}" if p.path else p.message for p in info.value.problems]


@pytest.mark.parametrize("path", sorted((ROOT / "workflows").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_examples_validate(path: Path) -> None:
    declared = documents.parse(path.read_bytes()).get("inputs") or {}
    given = {"customer_email": "kunde@example.com"} if "customer_email" in declared else None
    workflow = documents.load(path.read_bytes(), inputs=given)
    assert workflow.name == path.stem
    assert len(workflow.digest) == 64


def test_seed_examples_are_all_there() -> None:
    names = {p.stem for p in (ROOT / "workflows").glob("*.yaml")}
    assert {"intelligent_analysis", "post_instagram", "send_report", "charge_invoice"} <= names


def test_json_and_yaml_give_the_same_document_and_hash() -> None:
    from_yaml = documents.load(MAIL)
    from_json = documents.load(
        '{"name": "send_report", "goal": "send_email", "payload": {"to": "kunde@example.com",'
        ' "subject": "Monatsbericht", "template": "monthly_report"}}', fmt="json")
    assert from_yaml.document == from_json.document
    assert from_yaml.digest == from_json.digest
    assert from_yaml.document["type"] == "task"


def test_bad_email_is_named_with_its_path() -> None:
    assert problems(MAIL.replace("kunde@example.com", "x")) == ['payload.to: "x" is not an email']
    listed = MAIL.replace("to: kunde@example.com", "to: [a@example.com, nope]")
    assert problems(listed) == ['payload.to[1]: "nope" is not an email']


def test_unknown_keys_are_errors_at_every_level() -> None:
    found = problems("colour: blue\n" + MAIL)
    assert found == ["colour: unknown key; allowed here: category, goal, name, origin, payload, type"]
    nested = problems(MAIL + "  bcc: a@example.com\n")
    assert nested[0].startswith("payload.bcc: unknown key")


def test_all_problems_are_reported_at_once() -> None:
    found = problems("name: 'bad name!'\ngoal: charge\npayload: {customer: x, amount: 150, currency: EURO}\n")
    paths = {p.split(":")[0] for p in found}
    assert {"name", "payload.customer", "payload.amount", "payload.currency"} <= paths


def test_missing_fields_and_body_choice() -> None:
    assert "payload.subject: is required" in problems(MAIL.replace("  subject: Monatsbericht\n", ""))
    assert problems(MAIL.replace("  template: monthly_report\n", "")) == ["payload: needs one of text, html, template"]


@pytest.mark.parametrize("amount, currency, message", [
    ('"1.005"', "EUR", "more than 2 decimal places for EUR"),
    ('"10.5"', "JPY", "more than 0 decimal places for JPY"),
    ("150.5", "EUR", "must be of type string"),
    ('"0"', "EUR", "must be a positive number"),
])
def test_amounts_are_exact_decimal_strings(amount: str, currency: str, message: str) -> None:
    body = f"name: pay\ngoal: charge\npayload: {{customer: cus_1, amount: {amount}, currency: {currency}}}\n"
    found = problems(body)
    assert len(found) == 1 and found[0].startswith("payload.amount") and message in found[0]


def test_zero_decimal_and_three_decimal_currencies_accepted() -> None:
    documents.load('name: pay\ngoal: charge\npayload: {customer: cus_1, amount: "500", currency: JPY}')
    documents.load('name: pay\ngoal: charge\npayload: {customer: cus_1, amount: "1.250", currency: KWD}')


def test_instagram_needs_an_image() -> None:
    body = "name: post\ngoal: post_external\npayload: {platform: instagram, content: Hallo}\n"
    assert problems(body) == ["payload.media_url: is required"]


@pytest.mark.parametrize("body, fragment", [
    ("a: &x [1, 2]\nb: *x\n", "anchors"),
    ("a: *x\n", "aliases"),
    ("name: !!python/object/apply:os.system ['true']\n", "not allowed"),
    ("name: !!binary aGVsbG8=\n", "not allowed"),
    ("name: a\n---\nname: b\n", "exactly one YAML document"),
    ("name: a\nname: b\n", "duplicate key 'name'"),
    ("? [a, b]\n: c\n", "plain strings"),
    ("x: " + "[" * 40 + "]" * 40 + "\n", "nesting deeper than 32"),
    ("name: [unclosed\n", "invalid YAML"),
    ("   \n", "empty"),
    ("x: .nan\n", "not a finite number"),
    ("1: a\n", "must be a string"),
])
def test_hostile_yaml_is_rejected_before_use(body: str, fragment: str) -> None:
    with pytest.raises(DocumentSyntaxError) as info:
        documents.parse(body)
    assert fragment in str(info.value)


def test_billion_laughs_is_rejected_fast() -> None:
    lines = ['a0: &a0 ["lol"]'] + [f"a{i}: &a{i} [" + ", ".join([f"*a{i-1}"] * 9) + "]" for i in range(1, 10)]
    with pytest.raises(DocumentSyntaxError, match="anchors"):
        documents.parse("\n".join(lines))


def test_non_utf8_and_too_large_bodies() -> None:
    with pytest.raises(DocumentSyntaxError, match="not UTF-8"):
        documents.parse(b"name: caf\xe9\n")
    with pytest.raises(DocumentTooLarge, match="limit is 2048"):
        documents.parse(b"x: " + b"a" * 3000, max_bytes=2048)


def test_dates_stay_strings_and_bom_is_accepted() -> None:
    value = documents.parse("\ufeffwhen: 2024-01-01\n".encode())
    assert value == {"when": "2024-01-01"}


def test_json_specific_errors() -> None:
    with pytest.raises(DocumentSyntaxError, match="duplicate key"):
        documents.parse('{"a": 1, "a": 2}', fmt="json")
    with pytest.raises(DocumentSyntaxError, match="not a valid JSON number"):
        documents.parse('{"a": NaN}', fmt="json")
    with pytest.raises(DocumentSyntaxError, match="line 1"):
        documents.parse('{"a": }', fmt="json")
    with pytest.raises(DocumentSyntaxError, match="nesting"):
        documents.parse("[" * 100000 + "]" * 100000, fmt="json", max_bytes=10**6)


def test_top_level_must_be_a_mapping() -> None:
    assert problems("- a\n- b\n") == ["a workflow must be a mapping of keys to values, got a list"]


def test_approval_hash_changes_with_the_payload_only() -> None:
    first = documents.load(MAIL)
    assert documents.load(MAIL.replace("name: send_report", "name: send_report\ntype: task")).digest == first.digest
    assert documents.load(MAIL.replace("Monatsbericht", "Monatsbericht!")).digest != first.digest


@pytest.mark.parametrize("value, ok", [
    ("laden@example.com", True), ("Laden Muster <laden@example.com>", True), ("Café Ü <cafe@example.com>", True),
    ("Laden <laden@example.com>\n", False), ("Laden\r\nBcc: x@example.com <laden@example.com>", False),
    ("<laden@example.com>", False), ("Laden <not-an-address>", False), ("Laden, Muster <a@example.com>", False),
    ('"Laden" <a@example.com>', False), ("Laden <a@example.com> <b@example.com>", False),
])
def test_the_sender_and_reply_address_are_one_mailbox_on_one_line(value: str, ok: bool) -> None:
    for field in ("from", "reply_to"):
        doc = {"name": "m", "goal": "send_email", "payload": {"to": "a@example.com", "subject": "s", "text": "t",
                                                              field: value}}
        if ok:
            assert documents.validate(doc).payload[field] == value
        else:
            with pytest.raises(DocumentError) as caught:
                documents.validate(doc)
            assert {p.path for p in caught.value.problems} == {f"payload.{field}"}
            if "\r" in value or "\n" in value:  # said in words: the line break is the problem
                assert any("CR or LF" in p.message for p in caught.value.problems)


def _variants(value: object) -> list[object]:
    """``value`` and documents one slip away from it: every string with a line break, a trailing
    newline, nothing or too much in it, every value of another type, every key left out, an extra
    key beside every key."""
    out: list[object] = [value]
    if isinstance(value, dict):
        out += [{**value, "unexpected": 1}]
        for key, item in value.items():
            out.append({k: v for k, v in value.items() if k != key})
            out += [{**value, key: other} for other in _variants(item)[1:]]
    elif isinstance(value, list):
        out += [[], value * 60, [*value, value[0]] if value else [1]]
        for index, item in enumerate(value):
            out += [[*value[:index], other, *value[index + 1:]] for other in _variants(item)[1:]]
    elif isinstance(value, str):
        out += [value + "\n", "\n" + value, value[:1] + "\r\n" + value[1:], "", value * 2000, 1, None, True, [value]]
    elif isinstance(value, bool):
        out += [int(value), str(value).lower(), None]
    elif isinstance(value, int | float):
        out += [True, str(value), -value, value + 0.5, 10**20, None]
    return out


def test_the_compiled_check_accepts_nothing_the_schema_refuses() -> None:
    """``workflow_schema.compiled`` (jsonschema-rs) only says *yes* quickly: its yes must never let a
    document through that the schema's validator refuses — a header-breaking subject, a customer
    id with a trailing newline, a bool for an amount — and it should say yes to what is valid."""
    examples = [documents.parse(path.read_bytes()) for path in sorted((ROOT / "workflows").glob("*.yaml"))]
    examples += [documents.parse(MAIL), {"name": "pay", "goal": "charge", "payload": {
        "customer": "cus_1", "amount": "12.50", "currency": "EUR", "payment_method": "pm_card_visa"}}]
    examples += [{"name": "x", "category": "step", "origin": "workflow", "type": "task", "goal": "send_email",
                  "payload": {"to": ["a@example.com", "Shop <b@example.com>"], "from": "Shop <s@example.com>",
                              "subject": "Bericht", "text": "Hallo", "require_approval": True}}]
    reference, checked, accepted = workflow_schema.validator(), 0, 0
    for example in examples:
        for variant in _variants(example):
            valid, fast = reference.is_valid(variant), workflow_schema.surely_valid(variant)
            assert valid or not fast, variant
            assert fast or not valid, variant  # else it buys nothing
            checked += 1
            accepted += valid
    assert checked > 1000 and accepted > 100


@pytest.mark.parametrize("odd", [{"name": "x", "goal": "analyse", "payload": {"text": __import__("datetime").date(2026, 1, 1)}},
                                 {"name": "x", "goal": "analyse", "payload": {"text": "\ud800"}},
                                 {"name": "x", "goal": "analyse", "payload": {1: "text"}}])
def test_values_the_compiled_check_cannot_read_go_to_the_schema(odd: dict) -> None:
    """A YAML date, a lone surrogate, a number for a key: no exception, the schema's answer."""
    assert workflow_schema.validator().is_valid(odd) or not workflow_schema.surely_valid(odd)
