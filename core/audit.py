"""Write security events (core.models.SecurityEvent). Receivers in users/audit.py and
api_manager/audit.py call `record`; nothing else writes the log.

The actor and the address come from the request being served (core.signed_in keeps it in a
context variable), so a model signal that carries no request still says who and from where.
"""

from __future__ import annotations

import logging

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.http import HttpRequest

from core.client_ip import client_ip
from core.models import SecurityEvent, SecurityEventKind
from core.signed_in import current_request

logger = logging.getLogger("bsepar.security")


def _address(request: HttpRequest | None) -> str | None:
    return client_ip(request) if request is not None else None


def _actor(request: HttpRequest | None) -> str:
    # On a signed-in page LoginRequiredMiddleware has loaded the user already: no query.
    user = getattr(request, "user", None) if request is not None else None
    if user is None or isinstance(user, AnonymousUser) or not user.is_authenticated:
        return ""
    return user.get_username()


def record(
    kind: SecurityEventKind,
    *,
    user: AbstractBaseUser | None = None,
    username: str = "",
    detail: str = "",
    request: HttpRequest | None = None,
) -> SecurityEvent:
    """Append one event. `request` defaults to the request being served, if any."""
    request = request if request is not None else current_request.get()
    event = SecurityEvent.objects.create(
        kind=kind,
        user=user if user is not None and user.pk else None,
        username=(username or (user.get_username() if user is not None else ""))[:150],
        actor=_actor(request)[:150],
        address=_address(request),
        detail=detail[:500],
    )
    logger.info("security event %s user=%r address=%s", kind, event.username, event.address)
    return event
