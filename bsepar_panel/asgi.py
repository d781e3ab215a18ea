"""ASGI entry point: gunicorn runs it with the uvicorn worker (deploy/gunicorn.conf.py)."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bsepar_panel.settings")

# Django's own handler; the middleware chain is settings.MIDDLEWARE as listed.
application = get_asgi_application()
