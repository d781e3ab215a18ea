"""Settings for the test suite: production settings with fixed test secrets.

Debug stays off, so the suite runs the same security middleware and checks as production.
"""

from __future__ import annotations

import os

os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production-0123456789abcdef")
# A fixed Fernet key for tests only.
os.environ.setdefault("ENCRYPTION_KEYS", "kWaYx8xY2mQhD0pLqYV1dO6n2v3m0sJ8vFQ6y5w0b0Q=")
os.environ.setdefault("ALLOWED_HOSTS", "testserver,localhost,127.0.0.1")
os.environ.setdefault("SECURE_SSL_REDIRECT", "off")
# The suite's own connections are not pooled (pytest-django creates and drops the test
# database under them); the gunicorn processes of tests/deploy run with the pool, as deployed.
os.environ.setdefault("DATABASE_POOL", "off")
# The suite runs in one process: a per-process cache is enough, and a test's cache is cleared
# between tests (conftest). The processes tests/stack.py starts use the shared database cache.
os.environ.setdefault("CACHE_URL", "locmem://")


def _free_port() -> int:
    """A free port below Linux's ephemeral range (32768-60999), so that no outgoing connection
    (to PostgreSQL, to the panels under test) is given it before the fake starts."""
    import random
    import socket

    for _ in range(100):
        port = random.randint(20000, 32000)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port for the fake provider")


os.environ.setdefault("FAKE_PROVIDER_PORT", str(_free_port()))
os.environ.setdefault("PROVIDER_PRIVATE_HOSTS", f"127.0.0.1:{os.environ['FAKE_PROVIDER_PORT']}")

from bsepar_panel.settings import *  # noqa: E402,F403

STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
SESSION_COOKIE_SECURE = False
CSRF_COOKIE_SECURE = False
# The browser tests serve the ASGI app itself (no collectstatic): let whitenoise find files.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True

# SQLite tests use a file, not shared-cache memory: concurrent writers then wait for each
# other (busy timeout) as they do in production, instead of failing at once.
if DATABASES["default"]["ENGINE"] == "core.sqlite":  # noqa: F405
    import tempfile

    _test_db = os.path.join(tempfile.gettempdir(), f"bsepar-test-{os.getpid()}.sqlite3")
    DATABASES["default"]["TEST"] = {"NAME": _test_db}  # noqa: F405
