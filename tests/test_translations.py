"""The approval page's languages: every word of its templates and of aurora/web has a German
translation, the committed .mo is what the .po compiles to, an installed wheel carries both, and
money is written as each language writes it."""

from __future__ import annotations

import subprocess
import sys
import zipfile

from babel.messages.extract import extract_from_dir
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po
from conftest import ROOT

CATALOGUE = ROOT / "aurora" / "web" / "translations" / "de" / "LC_MESSAGES"
METHODS = [("**/templates/**.html", "jinja2.ext:babel_extract"), ("**.py", "python")]


def flat(value: str | list[str] | tuple[str, ...]) -> str | tuple[str, ...]:
    """A message id or string: plural forms as a tuple, whichever reader made them."""
    return value if isinstance(value, str) else tuple(value)


def extracted() -> set[str | tuple[str, ...]]:
    found = set()
    for _file, _line, message, _comments, _context in extract_from_dir(
            str(ROOT / "aurora" / "web"), METHODS, keywords={"_": None, "gettext": None, "ngettext": (1, 2)}):
        found.add(flat(message))
    return found


def test_every_word_of_the_page_has_a_german_translation_and_the_mo_is_compiled() -> None:
    with open(CATALOGUE / "messages.po", "rb") as handle:
        po = read_po(handle)
    with open(CATALOGUE / "messages.mo", "rb") as handle:
        mo = read_mo(handle)
    words = extracted()
    assert len(words) > 100
    translated = {flat(m.id): flat(m.string) for m in po if m.id}
    missing = sorted(str(w) for w in words if not translated.get(w) or not all(translated[w]))
    assert not missing, f"no German for {missing}: add them to messages.po, then pybabel compile -d aurora/web/translations"
    compiled = {flat(m.id): flat(m.string) for m in mo if m.id}
    stale = sorted(str(k) for k, v in translated.items() if compiled.get(k) != v)
    assert not stale, f"messages.mo is older than messages.po for {stale[:5]}: pybabel compile -d aurora/web/translations"


def test_money_is_written_as_each_language_writes_it(app) -> None:
    from aurora.web.wording import money

    for language, expected in (("de-DE,de;q=0.9", "150,00\u00a0€"), ("en-GB", "€150.00"), ("fr", "€150.00")):
        with app.test_request_context("/ui/", headers={"Accept-Language": language}):
            assert money("150.00", "EUR") == expected
            assert money(15000, "eur", minor=True) == expected  # Stripe's cents
    with app.test_request_context("/ui/", headers={"Accept-Language": "de"}):
        assert money(500, "JPY", minor=True) == "500\u00a0¥"  # a currency without cents
    with app.test_request_context("/workflows", headers={"Accept-Language": "de"}):
        from flask_babel import get_locale

        assert str(get_locale()) == "en"  # the JSON API does not change its language


def test_an_installed_wheel_carries_the_templates_and_the_translations(tmp_path) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(ROOT), "-w", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    [wheel] = tmp_path.glob("aurora_workflows-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"aurora/web/translations/de/LC_MESSAGES/messages.mo", "aurora/web/templates/run.html",
            "aurora/bundled_schemas/workflow.schema.json"} <= names
