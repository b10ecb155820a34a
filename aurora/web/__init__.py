"""The Flask application factory: one blueprint per surface, JSON everywhere."""

from __future__ import annotations

from typing import Any

from flask import Flask

from ..config import load_settings
from ..runtime import Runtime, get_runtime, set_runtime

#: room for multipart boundaries and headers around the largest accepted document
MULTIPART_OVERHEAD = 64 * 1024


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    if test_config and "AURORA_ENV" in test_config:
        set_runtime(Runtime(load_settings(test_config["AURORA_ENV"])))
    runtime = get_runtime()
    runtime.policies.current()  # a broken policy stops start-up here, naming the key
    app.config.update(
        MAX_CONTENT_LENGTH=runtime.settings.max_document_bytes + MULTIPART_OVERHEAD,
        JSON_SORT_KEYS=False,
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]
    if test_config:
        app.config.update({k: v for k, v in test_config.items() if k != "AURORA_ENV"})
    app.extensions["aurora"] = runtime

    from . import api, errors, federation, health, route, ui, webhooks

    errors.register(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(route.bp)
    app.register_blueprint(federation.bp)
    app.register_blueprint(webhooks.bp)
    ui.init_app(app, runtime.settings.home)
    # The JSON API authenticates every call with a bearer key, never a cookie: no CSRF there.
    for blueprint in (api.bp, route.bp, health.bp, federation.bp, webhooks.bp):
        ui.csrf.exempt(blueprint)
    return app
