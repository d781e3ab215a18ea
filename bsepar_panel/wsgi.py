"""WSGI entry point, for tools that need one. Production serves ASGI (see asgi.py): streams need it."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bsepar_panel.settings")

application = get_wsgi_application()
