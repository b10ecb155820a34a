"""Leases on the database's clock: a worker whose own clock is skewed by more than a lease can
neither take over a lease another worker keeps renewing, nor write leases that look lapsed.

The skewed worker is a real process whose clock, as Aurora reads it (``aurora.models.utcnow``, in
every module that imported it), is off by 12 s. (libfaketime would skew the whole process, but
0.9.10 also shifts CLOCK_MONOTONIC, so Python's timed waits there sleep 12 s too long, and with
``FAKETIME_DONT_FAKE_MONOTONIC`` its ``clock_nanosleep`` fails with EINVAL.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from aurora import documents
from aurora.config import load_settings
from aurora.migrations import upgrade
from aurora.models import AuditRecord, Event, Run
from aurora.runtime import Runtime

MAIL = "name: mail\ngoal: send_email\npayload: {to: a@example.com, subject: Hi, text: Hallo}\n"
#: the holder's act takes this long, several leases, so the lease lives only by its renewals
ACT_MS = 5000
LEASE = "4"  # renewed every 1.3 s: a loaded machine may delay a renewal by 2 s, not by 4

#: a worker process: ``hold`` executes the run (its act takes ACT_MS), ``steal`` sweeps and tries
#: to execute it for a few seconds and prints what it got
WORKER = """
import json, sys, time
from datetime import timedelta
import aurora.models
real, skew = aurora.models.utcnow, timedelta(seconds=float(sys.argv[3]))
aurora.models.utcnow = lambda: real() + skew  # modules imported from here on take this one
for module in list(sys.modules.values()):
    if getattr(module, "utcnow", None) is real:
        module.utcnow = aurora.models.utcnow
from aurora.config import load_settings
from aurora.runtime import Runtime
engine = Runtime(load_settings()).engine
role, run_id = sys.argv[1], sys.argv[2]
if role == "hold":
    print(json.dumps({"outcome": engine.execute(run_id, owner="skewed:1:holder").status}))
else:
    swept, outcomes, deadline = [], [], time.monotonic() + 3.5
    while time.monotonic() < deadline:
        swept += engine.sweep()
        outcomes.append(engine.execute(run_id, owner="skewed:1:thief").status)
        time.sleep(0.2)
    print(json.dumps({"swept": swept, "outcomes": sorted(set(outcomes))}))
"""


@pytest.fixture(params=["sqlite", "postgresql"])
def lease_env(request, env) -> dict[str, str]:
    env = {**env, "AURORA_LEASE_SECONDS": LEASE, "AURORA_SIMULATED_LATENCY_MS": str(ACT_MS)}
    if request.param == "postgresql":
        env["AURORA_DATABASE_URL"] = request.getfixturevalue("postgres_url")
    upgrade(env["AURORA_DATABASE_URL"])
    return env


def skewed(env: dict[str, str], skew: float, role: str, run_id: str) -> subprocess.Popen:
    full = {**os.environ, **env, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    return subprocess.Popen([sys.executable, "-c", WORKER, role, run_id, str(skew)], env=full, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def answer(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def acted(engine, run_id: str) -> tuple[int, int]:
    with engine.db.read() as session:
        records = session.scalar(select(func.count()).select_from(AuditRecord).where(AuditRecord.run_id == run_id))
        claims = session.scalar(select(func.count()).select_from(Event).where(
            Event.run_id == run_id, Event.type == "run.running"))
    return records, claims


def test_a_fast_clock_cannot_take_over_a_renewed_lease(lease_env) -> None:
    engine = Runtime(load_settings(lease_env)).engine
    run = engine.submit(documents.load(MAIL), "sam")
    outcome: list[str] = []
    holder = threading.Thread(target=lambda: outcome.append(engine.execute(run.id, owner="honest:1:holder").status))
    holder.start()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and acted(engine, run.id)[1] == 0:
        time.sleep(0.05)
    thief = skewed(lease_env, +12, "steal", run.id)  # its clock is three leases ahead
    got = answer(thief)
    holder.join(timeout=30)
    # the thief never takes it: it sees it running (or, once the holder is done, succeeded)
    assert got["swept"] == [] and set(got["outcomes"]) <= {"running", "succeeded"} and got["outcomes"][0] == "running", got
    assert outcome == ["succeeded"]
    assert acted(engine, run.id) == (1, 1)  # one act, by the holder


def test_a_slow_clock_does_not_lose_its_lease(lease_env) -> None:
    engine = Runtime(load_settings({**lease_env, "AURORA_SIMULATED_LATENCY_MS": "0"})).engine
    run = engine.submit(documents.load(MAIL), "sam")
    holder = skewed(lease_env, -12, "hold", run.id)  # its leases would be three leases old at once
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and acted(engine, run.id)[1] == 0:
        time.sleep(0.05)
    swept, outcomes = [], set()
    deadline = time.monotonic() + 3.5
    while time.monotonic() < deadline:
        swept += engine.sweep()
        outcomes.add(engine.execute(run.id, owner="honest:1:thief").status)
        time.sleep(0.2)
    assert answer(holder) == {"outcome": "succeeded"}
    assert swept == [] and outcomes == {"running"}
    assert acted(engine, run.id) == (1, 1)
    with engine.db.read() as session:
        assert session.scalar(select(Run.status).where(Run.id == run.id)) == "succeeded"


def test_lease_times_on_the_database_clock_read_back_and_compare_below_a_second(lease_env) -> None:
    from datetime import timedelta

    from sqlalchemy import update

    from aurora.dbclock import db_later, db_now
    from aurora.models import utcnow

    engine = Runtime(load_settings(lease_env)).engine
    with engine.db.write_rows() as connection:
        later, now = connection.execute(select(db_later(2.5), db_now())).one()
    assert later.tzinfo is not None and abs((later - now).total_seconds() - 2.5) < 0.01
    assert abs((now - utcnow()).total_seconds()) < 1  # the same machine: the clocks agree
    run = engine.submit(documents.load(MAIL), "sam")
    with engine.db.write() as session:  # a lease written by Python, 0.5 s from now
        session.execute(update(Run).where(Run.id == run.id).values(
            status="running", lease_owner="w", lease_expires_at=utcnow() + timedelta(seconds=0.5)))
    assert engine.sweep() == []
    time.sleep(0.7)
    assert engine.sweep() == [run.id]
