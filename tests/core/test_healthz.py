from __future__ import annotations

from unittest import mock

import pytest
from django.db import OperationalError

from tests import stack


def test_it_answers_ok_without_sign_in(client, db):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.content == b"ok"


def test_it_answers_503_when_the_database_does_not(client, db):
    with mock.patch("core.views.connection.cursor", side_effect=OperationalError("down")):
        response = client.get("/healthz")
    assert response.status_code == 503


def redis_cache(url: str) -> dict:
    return {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": url}}


def test_it_answers_503_when_the_redis_cache_does_not(client, db, settings):
    # Nothing listens on this port: the connection is refused at once.
    settings.CACHES = redis_cache(f"redis://127.0.0.1:{stack.free_port()}/15")
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.content == b"cache unavailable"


def test_it_checks_redis_when_the_cache_uses_it(client, db, settings):
    url = stack.redis_url()
    if url is None:
        pytest.skip("no Redis server on 127.0.0.1:6379")
    settings.CACHES = redis_cache(url)
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.content == b"ok"
