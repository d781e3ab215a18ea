"""A per-user limit on calls that reach a provider outside a chat turn (live key tests, model
listings), counted in the cache every worker shares."""

from __future__ import annotations

import time

from django.conf import settings
from django.core.cache import cache
from django.utils.translation import gettext as _

WINDOW_SECONDS = 60


class TooManyChecks(Exception):
    """The user has used up this minute's provider checks. `message` is safe to show."""

    def __init__(self, retry_after: int) -> None:
        self.retry_after = retry_after
        self.message = _(
            "Too many key tests in a minute. Wait %(seconds)d seconds and try again."
        ) % {"seconds": retry_after}
        super().__init__(self.message)


def count_provider_check(user_id: int) -> None:
    """Count one check for `user_id`; raise TooManyChecks past the limit (nothing is called
    then). Fixed one-minute windows: simple, shared, and at most twice the rate at a boundary."""
    now = time.time()
    window = int(now // WINDOW_SECONDS)
    key = f"provider-checks:{user_id}:{window}"
    if cache.add(key, 1, WINDOW_SECONDS + 5):
        count = 1
    else:
        try:
            count = cache.incr(key)
        except ValueError:  # expired between add() and incr()
            cache.add(key, 1, WINDOW_SECONDS + 5)
            count = 1
    if count > settings.PROVIDER_CHECKS_PER_MINUTE:
        raise TooManyChecks(retry_after=max(1, int((window + 1) * WINDOW_SECONDS - now)))
