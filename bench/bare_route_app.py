"""The ``POST /route`` baseline: bare Flask that parses the JSON body and answers a fixed decision
(what any Flask endpoint costs on this machine, with no key check, router, log or metrics)."""

from __future__ import annotations

from flask import Flask, jsonify, request

app = Flask("bare_route")


@app.post("/route")
def decide():  # type: ignore[no-untyped-def]
    body = request.get_json(silent=True) or {}
    return jsonify({"engine": "claude", "score": 0.0, "text_chars": len(body.get("text", ""))})
