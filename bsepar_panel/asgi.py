"""ASGI entry point: gunicorn runs it with the uvicorn worker (deploy/gunicorn.conf.py)."""

from __future__ import annotations

import os
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bsepar_panel.settings")

# Django's own handler; the middleware chain is settings.MIDDLEWARE as listed.
django_application = get_asgi_application()


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Django's handler, and the lifespan protocol it rejects: on shutdown (a graceful restart)
    the worker lets its running replies finish, or saves them as interrupted (ai_chat.jobs)."""
    if scope["type"] != "lifespan":
        await django_application(scope, receive, send)
        return
    from django.conf import settings

    from ai_chat import jobs

    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await jobs.shutdown(settings.CHAT_SHUTDOWN_SECONDS)
            await send({"type": "lifespan.shutdown.complete"})
            return
