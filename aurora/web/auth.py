"""Bearer-key authentication for the API: ``Authorization: Bearer <key>``."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import current_app, g, request

from .. import keys
from ..errors import AuthError
from ..models import Role

F = TypeVar("F", bound=Callable[..., Any])


def presented_key() -> str | None:
    header = request.headers.get("Authorization", "")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise AuthError("malformed Authorization header: use 'Authorization: Bearer <key>'")
    return value.strip()


def require(*roles: Role) -> Callable[[F], F]:
    """Authenticate the caller; ``roles`` (admin always included) may call the view."""

    def decorator(view: F) -> F:
        @wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            runtime = current_app.extensions["aurora"]
            caller = keys.authenticate(runtime.db, presented_key(), runtime.settings.key_cache_seconds)
            if roles:
                caller.require(*roles)
            g.caller = caller
            return view(*args, **kwargs)

        return wrapped  # type: ignore[return-value]

    return decorator


ANY_ROLE = (Role.ADMIN, Role.SUBMITTER, Role.APPROVER, Role.VIEWER)
