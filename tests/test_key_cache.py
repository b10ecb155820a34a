"""A web process remembers a verified API key for AURORA_KEY_CACHE_SECONDS (aurora/keys.py): the
key's row is not read on every request, and a revoked key still stops working — at once in the
process that revoked it, within the bound in every other one, at once for admin keys."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import event

from aurora import keys, people
from aurora.config import load_settings
from aurora.db import Database
from aurora.errors import ConfigError
from aurora.models import Role

BOUND = 0.5
TEXT = {"text": "Recherchiere aktuelle Studien zu PBM"}


@pytest.fixture
def env(env: dict[str, str]) -> dict[str, str]:
    return {**env, "AURORA_KEY_CACHE_SECONDS": str(BOUND)}


@contextmanager
def key_reads(runtime) -> Iterator[list[str]]:  # type: ignore[no-untyped-def]
    """The statements that read a key's row while inside."""
    seen: list[str] = []

    def count(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        if "api_keys" in statement:
            seen.append(statement)

    engine = runtime.db._single_read
    event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", count)


def test_a_verified_key_is_not_read_again_within_the_bound(client, api_keys, runtime) -> None:
    viewer = api_keys.header("viewer")
    with key_reads(runtime) as reads:
        for _ in range(5):
            assert client.post("/route", json=TEXT, headers=viewer).status_code == 200
    assert len(reads) == 1
    time.sleep(BOUND + 0.05)
    with key_reads(runtime) as reads:
        assert client.post("/route", json=TEXT, headers=viewer).status_code == 200
    assert len(reads) == 1  # the bound passed: read again


def test_admin_keys_and_a_bound_of_zero_are_read_every_time(client, api_keys, runtime) -> None:
    with key_reads(runtime) as reads:
        for _ in range(3):
            assert client.post("/route", json=TEXT, headers=api_keys.header("admin")).status_code == 200
    assert len(reads) == 3
    object.__setattr__(runtime.settings, "key_cache_seconds", 0.0)
    with key_reads(runtime) as reads:
        for _ in range(3):
            assert client.post("/route", json=TEXT, headers=api_keys.header("viewer")).status_code == 200
    assert len(reads) == 3


def test_a_key_revoked_in_this_process_stops_at_once(client, api_keys, runtime) -> None:
    viewer = api_keys.header("viewer")
    assert client.post("/route", json=TEXT, headers=viewer).status_code == 200  # remembered now
    keys.revoke(runtime.db, "vic")
    refused = client.post("/route", json=TEXT, headers=viewer)
    assert refused.status_code == 401 and refused.json["error"] == "unauthorized"
    submitter = api_keys.header("submitter")
    assert client.get("/workflows", headers=submitter).status_code == 200
    people.remove_person(runtime.db, "sam")
    assert client.get("/workflows", headers=submitter).status_code == 401


def test_a_key_revoked_by_another_process_stops_within_the_bound(client, api_keys, runtime, env) -> None:
    viewer = api_keys.header("viewer")
    revoke = subprocess.Popen([sys.executable, "-m", "aurora", "keys", "revoke", "vic"], env={**os.environ, **env},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while revoke.poll() is None:  # the key stays freshly verified here while the other process revokes it
        client.post("/route", json=TEXT, headers=viewer)
        time.sleep(0.01)
    revoked = time.monotonic()
    assert revoke.returncode == 0, revoke.stderr.read()  # type: ignore[union-attr]
    while client.post("/route", json=TEXT, headers=viewer).status_code == 200:
        assert time.monotonic() - revoked < BOUND + 0.25, "a revoked key outlived AURORA_KEY_CACHE_SECONDS"
        time.sleep(0.01)
    assert client.post("/route", json=TEXT, headers=viewer).status_code == 401


def test_an_admin_key_revoked_elsewhere_stops_at_once(client, api_keys, runtime) -> None:
    keys.create(runtime.db, "second-admin", Role.ADMIN)
    admin = api_keys.header("admin")
    assert client.post("/route", json=TEXT, headers=admin).status_code == 200
    elsewhere = Database(runtime.settings.database_url, runtime.settings.audit_key_path)  # another process's view
    people.revoke_key(elsewhere, "admin")
    assert client.post("/route", json=TEXT, headers=admin).status_code == 401


def test_a_refused_key_is_not_remembered(client, api_keys, runtime) -> None:
    wrong = api_keys.viewer[:-4] + "AAAA"
    with key_reads(runtime) as reads:
        for _ in range(3):
            assert client.post("/route", json=TEXT, headers={"Authorization": f"Bearer {wrong}"}).status_code == 401
    assert len(reads) == 3
    assert client.post("/route", json=TEXT, headers=api_keys.header("viewer")).status_code == 200


@pytest.mark.parametrize("raw", ["-1", "soon"])
def test_a_bad_bound_is_refused_by_name(env, raw: str) -> None:
    with pytest.raises(ConfigError, match="AURORA_KEY_CACHE_SECONDS"):
        load_settings({**env, "AURORA_KEY_CACHE_SECONDS": raw})
