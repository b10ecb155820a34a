"""``python -P -m aurora.gunicorn_main``: gunicorn, with Aurora imported first.

gunicorn puts its working directory at the front of ``sys.path`` before it imports the app, so
an ``aurora/`` folder in the directory ``aurora up`` was started from would be imported instead
of the installed package. Started with ``-P`` (no directory prepended) through this module,
``aurora`` is already imported from the installed package when gunicorn does that, and every
``aurora.*`` import after it resolves inside that package.
"""

from __future__ import annotations

from gunicorn.app.wsgiapp import run

import aurora  # noqa: F401 - imported before gunicorn changes sys.path

if __name__ == "__main__":
    run()
