"""A per-address limit on failed sign-ins, in the cache every worker shares.

Axes locks the pair (username, address): an attacker elsewhere cannot lock a real user out.
That alone would let one address try a few passwords for every username it can think of, so
this module also counts the failures of each address, whatever the username, and refuses every
sign-in from an address past `settings.LOGIN_ADDRESS_FAILURE_LIMIT` until the cool-off ends.
"""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.contrib.auth.signals import user_login_failed
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.dispatch import receiver
from django.http import HttpRequest

from core.client_ip import client_ip


def _key(address: str | None) -> str:
    return "login-failures:" + hashlib.sha256((address or "").encode()).hexdigest()[:32]


def _window() -> int:
    return max(1, int(settings.AXES_COOLOFF_TIME.total_seconds()))


def failures(request: HttpRequest) -> int:
    return int(cache.get(_key(client_ip(request)), 0))


def is_throttled(request: HttpRequest) -> bool:
    """True when the request's address has used up its failed sign-ins for now."""
    return failures(request) >= settings.LOGIN_ADDRESS_FAILURE_LIMIT


def record_failure(request: HttpRequest) -> None:
    key = _key(client_ip(request))
    # add() starts the window on the first failure; incr() never extends it.
    if not cache.add(key, 1, _window()):
        try:
            cache.incr(key)
        except ValueError:  # expired between add() and incr()
            cache.add(key, 1, _window())


@receiver(user_login_failed, dispatch_uid="users.throttle.count_failure")
def _count_failure(
    sender: object, credentials: dict, request: HttpRequest | None = None, **kwargs: object
) -> None:
    if request is not None:
        record_failure(request)


class AddressThrottleBackend:
    """Before ModelBackend in AUTHENTICATION_BACKENDS: refuses every sign-in (any form, the
    admin's too) from an address past its limit, before a password is checked. It has no
    `get_user`, so Django never picks it as the backend a session is signed in with."""

    def authenticate(self, request: HttpRequest | None, **credentials: object) -> None:
        if request is not None and is_throttled(request):
            raise PermissionDenied("too many failed sign-ins from this address")
        return None
