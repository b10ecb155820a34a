"""The submissions baseline: a bare Flask endpoint that only parses and validates the YAML."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from flask import Flask, jsonify, request
from jsonschema import Draft202012Validator

SCHEMA = json.loads((Path(__file__).resolve().parent.parent / "schemas" / "workflow.schema.json").read_text())
validator = Draft202012Validator(SCHEMA)
app = Flask("bare")


@app.post("/workflows")
def submit():  # type: ignore[no-untyped-def]
    document = yaml.load(request.get_data(), Loader=yaml.CSafeLoader)  # noqa: S506 - CSafeLoader is safe
    validator.validate(document)
    return jsonify({"status": "valid"}), 201
