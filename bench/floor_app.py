"""A second submissions baseline: the least any implementation of the spine must do per submission.

Everything the issue asks of ``POST /workflows`` and nothing of Aurora's own: parse and validate the
YAML (as ``bare_app``), look the bearer key up by id and compare its SHA-256 in constant time, store
the run and its ``run.queued`` event in one SQLite transaction (Aurora's tables, WAL, synchronous
NORMAL) with the plain ``sqlite3`` module, and publish the run id with Celery's ``send_task`` to
Redis. No size limits or alias checks, no logging, no metrics, no ORM. It shows how much of the
gap between Aurora and ``bare_app`` is the work itself.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sqlite3
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path

import yaml
from celery import Celery
from flask import Flask, jsonify, request
from jsonschema import Draft202012Validator

from aurora.celery_app import QUEUE
from aurora.redis_transport import NAME as AURORA_REDIS_TRANSPORT

SCHEMA = json.loads((Path(__file__).resolve().parent.parent / "schemas" / "workflow.schema.json").read_text())
validator = Draft202012Validator(SCHEMA)
DATABASE = os.environ["AURORA_DATABASE_URL"].removeprefix("sqlite:///")
celery = Celery("floor", broker=os.environ["AURORA_BROKER_URL"])
celery.conf.update(broker_transport=AURORA_REDIS_TRANSPORT, task_default_queue=QUEUE)
app = Flask("floor")
_local = threading.local()


def _db() -> sqlite3.Connection:
    if not hasattr(_local, "db"):
        _local.db = sqlite3.connect(DATABASE, isolation_level=None)
        _local.db.execute("PRAGMA busy_timeout = 5000")
        _local.db.execute("PRAGMA synchronous = NORMAL")
    return _local.db


@app.post("/workflows")
def submit():  # type: ignore[no-untyped-def]
    key = request.headers.get("Authorization", "").removeprefix("Bearer ")
    db = _db()
    row = db.execute("SELECT name, key_hash, revoked_at FROM api_keys WHERE key_id = ?", (key.split("_")[1],)).fetchone()
    if row is None or row[2] is not None or not hmac.compare_digest(row[1], hashlib.sha256(key.encode()).hexdigest()):
        return jsonify({"error": "unauthorized"}), 401
    document = yaml.load(request.get_data(), Loader=yaml.CSafeLoader)  # noqa: S506 - CSafeLoader is safe
    validator.validate(document)
    run_id, now = str(uuid.uuid4()), datetime.now(UTC).replace(tzinfo=None).isoformat(" ")
    text = json.dumps(document)
    db.execute("BEGIN IMMEDIATE")
    db.execute("INSERT INTO runs (id, name, goal, document, document_hash, status, approvals_required, submitted_by,"
               " attempts, created_at, updated_at, enqueued_at) VALUES (?, ?, ?, ?, ?, 'queued', 0, ?, 0, ?, ?, ?)",
               (run_id, document["name"], document["goal"], text, hashlib.sha256(text.encode()).hexdigest(), row[0],
                now, now, now))
    db.execute("INSERT INTO events (id, origin, type, run_id, created_at, data) VALUES (?, 'bench', 'run.queued', ?, ?, ?)",
               (str(uuid.uuid4()), run_id, now, json.dumps({"name": document["name"], "goal": document["goal"], "submitted_by": row[0]})))
    db.execute("COMMIT")
    celery.send_task("aurora.execute_run", args=[run_id])
    return jsonify({"id": run_id, "status": "queued"}), 201
