"""ASGI entry point: gunicorn runs it with the uvicorn worker (deploy/gunicorn.conf.py)."""

from __future__ import annotations

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bsepar_panel.settings")
django.setup(set_prefix=False)

# Django's ASGI handler (what get_asgi_application() returns), with the middleware hooks run
# in the event loop: see core/middleware.py.
from core.middleware import ASGIHandler  # noqa: E402

application = ASGIHandler()
