"""Workflows of several steps on a real database (SQLite and PostgreSQL): the graph's semantics."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from aurora import documents
from aurora.config import load_settings
from aurora.engine import Engine
from aurora.migrations import upgrade
from aurora.models import Event, Run
from aurora.runtime import Runtime

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, env) -> Engine:
    if request.param == "postgresql":
        env = {**env, "AURORA_DATABASE_URL": request.getfixturevalue("postgres_url")}
    rt = Runtime(load_settings(env))
    upgrade(rt.settings.database_url)
    return rt.engine


def drive(engine: Engine, run_id: str, limit: int = 100) -> list[str]:
    """Do what the workers do: execute the run, then whatever each execution hands on."""
    todo, done = [run_id], []
    while todo and len(done) < limit:
        current = todo.pop(0)
        outcome = engine.execute(current)
        done.append(current)
        todo += [follow for follow, _ in outcome.follow_up]
    return done


def run_of(engine: Engine, run_id: str) -> Run:
    with engine.db.read() as session:
        return session.scalar(select(Run).where(Run.id == run_id))


def children(engine: Engine, run_id: str) -> dict[str, Run]:
    with engine.db.read() as session:
        return {r.step_id: r for r in session.scalars(select(Run).where(Run.parent_id == run_id).order_by(Run.step_attempt))}


def submit(engine: Engine, text: str, **inputs) -> str:
    return engine.submit(documents.load(text, inputs=inputs), "sam").id


def test_research_then_report_runs_end_to_end_in_dry_run(engine: Engine) -> None:
    text = (ROOT / "workflows" / "research_report.yaml").read_text()
    run_id = submit(engine, text, customer_email="kunde@example.com")
    drive(engine, run_id)
    run = run_of(engine, run_id)
    assert run.status == "succeeded", run.error
    steps = children(engine, run_id)
    assert steps["research"].status == "succeeded" and steps["report"].status == "succeeded"
    mail = steps["report"].result["request"]["form"]
    assert mail["to"] == ["kunde@example.com"]
    assert "simulated analysis" in mail["text"] and "Hufrehe" in mail["text"]
    assert run.result["mode"] == "simulated"
    with engine.db.read() as session:
        kinds = [e.type for e in session.scalars(select(Event).where(Event.run_id == run_id).order_by(Event.seq))]
    assert kinds[0] == "run.queued" and kinds[-1] == "run.succeeded"
    assert kinds.count("step.started") == 2 and kinds.count("step.succeeded") == 2
