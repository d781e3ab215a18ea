"""Views that belong to no app: the health check."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.core.cache import caches
from django.db import DatabaseError, connection
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from redis.exceptions import RedisError

HEALTH_KEY = "bsepar:healthz"


def _uses_redis() -> bool:
    return "redis" in settings.CACHES["default"]["BACKEND"].lower()


@login_not_required
@never_cache
@require_GET
def healthz(request: HttpRequest) -> HttpResponse:
    """200 `ok` when the database answers a query (and Redis, when CACHE_URL names it: sessions,
    lockouts and budgets live there), 503 naming what does not answer otherwise."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError:
        return HttpResponse("database unavailable", status=503, content_type="text/plain")
    if _uses_redis():
        try:
            cache = caches["default"]
            cache.set(HEALTH_KEY, "1", timeout=30)
            answered = cache.get(HEALTH_KEY) == "1"
        except RedisError:
            answered = False
        if not answered:
            return HttpResponse("cache unavailable", status=503, content_type="text/plain")
    return HttpResponse("ok", content_type="text/plain")
