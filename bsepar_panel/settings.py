"""Settings for bsepar panel: one file, every value from the environment (or a `.env` file).

The variables are listed in README.md and deploy/env.example. With `DJANGO_DEBUG` off the
panel refuses to start without a `SECRET_KEY` and valid `ENCRYPTION_KEYS`.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import timedelta
from pathlib import Path

import environ
from csp.constants import NONCE, NONE, SELF
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
if (BASE_DIR / ".env").is_file():
    environ.Env.read_env(BASE_DIR / ".env")

DEBUG = env.bool("DJANGO_DEBUG", default=False)

SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set it in the environment or in .env "
            "(or set DJANGO_DEBUG=on for a development server)."
        )
    SECRET_KEY = "insecure-development-key-do-not-use-in-production"


def _fernet_keys() -> list[str]:
    """Return the Fernet keys, newest first, checking each one's form.

    In debug without ENCRYPTION_KEYS a key is derived from SECRET_KEY, so a development
    checkout works out of the box; production must name its keys.
    """
    keys = env.list("ENCRYPTION_KEYS", default=[])
    keys = [k.strip() for k in keys if k.strip()]
    if not keys:
        if not DEBUG:
            raise ImproperlyConfigured(
                "ENCRYPTION_KEYS is not set. Generate one with "
                "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'` "
                "and set ENCRYPTION_KEYS to it (comma-separated, newest first, to rotate)."
            )
        digest = hashlib.sha256(("bsepar-dev:" + SECRET_KEY).encode()).digest()
        return [base64.urlsafe_b64encode(digest).decode()]
    for position, key in enumerate(keys, start=1):
        try:
            raw = base64.urlsafe_b64decode(key.encode())
        except (ValueError, TypeError):
            raw = b""
        if len(raw) != 32:
            raise ImproperlyConfigured(
                f"ENCRYPTION_KEYS entry {position} is not a valid Fernet key "
                "(32 url-safe base64-encoded bytes)."
            )
    return keys


ENCRYPTION_KEYS = _fernet_keys()

ALLOWED_HOSTS = env.list(
    "ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"] if DEBUG else []
)
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "axes",
    "core",
    "users",
    "dashboard",
    "api_manager",
    "ai_chat",
]

# What runs is what is listed. Under ASGI the core.middleware ones run their hooks in the event
# loop (a thread trip less each), Django's security middlewares included: core/checks.py runs
# `check --deploy`'s checks on them as on Django's own (core/middleware.py says what each saves).
MIDDLEWARE = [
    "core.middleware.SecurityMiddleware",
    "core.middleware.StaticFilesMiddleware",  # WhiteNoise, without a thread hop under ASGI
    "core.middleware.CSPMiddleware",
    "core.middleware.SessionMiddleware",
    "core.middleware.LocaleMiddleware",
    "core.middleware.CommonMiddleware",
    "core.middleware.CsrfViewMiddleware",
    "core.middleware.AuthenticationMiddleware",
    "core.middleware.LoginRequiredMiddleware",
    "core.middleware.MessageMiddleware",
    "core.signed_in.SignedInMiddleware",  # no-store on every page; the request for the audit log
    "core.middleware.XFrameOptionsMiddleware",
    # Axes must come last: it answers a locked-out login before the view runs.
    "axes.middleware.AxesMiddleware",
]
# Django's "middleware missing" deploy warnings do not know the subclasses above: core/checks.py
# raises them (as core.W001–W003) when one is missing indeed.
SILENCED_SYSTEM_CHECKS = ["security.W001", "security.W002", "security.W003"]

ROOT_URLCONF = "bsepar_panel.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "core.context_processors.panel",
            ],
        },
    },
]

WSGI_APPLICATION = "bsepar_panel.wsgi.application"
ASGI_APPLICATION = "bsepar_panel.asgi.application"

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Under ASGI every request runs its database work in a thread of its own, so persistent
    # connections would leak: connections come from a psycopg pool instead (DATABASE_POOL,
    # on by default), and go back to it when a request ends or a chat stream starts.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    if env.bool("DATABASE_POOL", default=True):
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
            "min_size": env.int("DATABASE_POOL_MIN", default=2),
            "max_size": env.int("DATABASE_POOL_MAX", default=20),
            "timeout": env.float("DATABASE_POOL_TIMEOUT", default=10.0),
        }
elif DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Django's backend and the options it supports, plus writers queued on a lock instead of
    # SQLite's sleep-and-retry (core/sqlite/base.py; bench/writers.py measures what it saves).
    DATABASES["default"]["ENGINE"] = "core.sqlite"
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            # WAL lets readers and one writer work at once; the init command runs per connection.
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
        }
    )

# The data directory: the SQLite database's folder (`/var/lib/bsepar-panel` in the deploy), or
# DATA_DIR on PostgreSQL. Attachments live in MEDIA_ROOT (private: served by a view that checks
# the owner, never by the static location) and `manage.py backup` writes to BACKUP_DIR.
if DATABASES["default"]["ENGINE"] == "core.sqlite" and DATABASES["default"]["NAME"] != ":memory:":
    _data_default = Path(DATABASES["default"]["NAME"]).resolve().parent
else:
    _data_default = BASE_DIR
DATA_DIR = Path(env.str("DATA_DIR", default=str(_data_default)))
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(DATA_DIR / "media")))
BACKUP_DIR = Path(env.str("BACKUP_DIR", default=str(DATA_DIR / "backups")))

# The query action reads through a connection of its own that cannot write (issue #8.3): on
# SQLite a read-only file connection (mode=ro + query_only) that never takes the writers'
# lock, on PostgreSQL a session whose transactions are read-only and stopped at
# ACTIONS_QUERY_TIMEOUT_MS. In tests it mirrors the default alias, so it reads the test database.
ACTIONS_QUERY_DATABASE = "readonly"
ACTIONS_QUERY_TIMEOUT_MS = env.int("ACTIONS_QUERY_TIMEOUT_MS", default=5000)
DATABASES[ACTIONS_QUERY_DATABASE] = {
    **DATABASES["default"],
    "OPTIONS": dict(DATABASES["default"].get("OPTIONS", {})),
    "TEST": {"MIRROR": "default"},
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES[ACTIONS_QUERY_DATABASE]["OPTIONS"]["options"] = (
        f"-c default_transaction_read_only=on -c statement_timeout={ACTIONS_QUERY_TIMEOUT_MS}"
    )
    if "pool" in DATABASES[ACTIONS_QUERY_DATABASE]["OPTIONS"]:
        # Queries are rare: no idle connections kept for them, a few at once per worker.
        DATABASES[ACTIONS_QUERY_DATABASE]["OPTIONS"]["pool"] = {
            **DATABASES["default"]["OPTIONS"]["pool"],
            "min_size": 0,
            "max_size": 4,
        }
else:
    DATABASES[ACTIONS_QUERY_DATABASE].update(
        ENGINE="ai_chat.actions.readonly_sqlite",
        OPTIONS={"timeout": 5},
    )

# Threads per worker process for the database work of async requests (chat turns, loading
# the user): core/db.py. Each holds at most one connection while it works.
DATABASE_THREADS = env.int("DATABASE_THREADS", default=4)

# Shared state (rate limits, lockout throttles, cached model lists, the tools offered) must be
# seen by every worker process: the default is Django's database cache (its table is created by
# a migration in core), `redis://` for several servers. `locmem://` is per process: tests only.
CACHE_TABLE = "bsepar_cache"
_cache_url = env.str("CACHE_URL", default=f"dbcache://{CACHE_TABLE}")
if _cache_url.startswith("locmem://"):
    _cache_url = "locmemcache://" + _cache_url[len("locmem://") :]
CACHES = {"default": environ.Env.cache_url_config(_cache_url)}
# Sessions live in the database, so a logout or a deactivation ends them on every worker and
# server at once (one query per signed-in page). With Redis, reads come from the shared cache
# and are written through to the database.
SESSION_ENGINE = (
    "django.contrib.sessions.backends.cached_db"
    if CACHES["default"]["BACKEND"].endswith("RedisCache")
    else "django.contrib.sessions.backends.db"
)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    # Before any password is checked: refuses an address past its failure limit.
    "users.throttle.AddressThrottleBackend",
    "django.contrib.auth.backends.ModelBackend",
]

LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/login/"

# Internationalisation: English and Persian (right to left) from the start.
LANGUAGE_CODE = "en"
LANGUAGES = [("en", _("English")), ("fa", _("Persian"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(BASE_DIR / "staticfiles")))
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
WHITENOISE_MAX_AGE = 31536000 if not DEBUG else 0

# Security. Behind nginx, which terminates TLS and sets X-Forwarded-Proto.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
SESSION_COOKIE_SECURE = not DEBUG
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_AGE = env.int("SESSION_COOKIE_AGE", default=14 * 24 * 3600)
CSRF_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"

CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF, NONCE],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

# Brute-force protection: after AXES_FAILURE_LIMIT failures for one username from one
# address, sign-in is refused for the cool-off time, the same way for unknown usernames.
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("AXES_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_HTTP_RESPONSE_CODE = 429
# The client's address is the one nginx saw: nginx overwrites X-Real-IP and X-Forwarded-For
# with $remote_addr, and the panel believes those headers only from TRUSTED_PROXIES
# (core/client_ip.py). Anything else a client sends is ignored.
TRUSTED_PROXIES = env.list("TRUSTED_PROXIES", default=["127.0.0.1/32", "::1/128"])
AXES_CLIENT_IP_CALLABLE = "core.client_ip.client_ip"
# One address trying many usernames: after this many failed sign-ins from it within the
# cool-off time, every sign-in from it is refused until the cool-off ends (users/throttle.py).
LOGIN_ADDRESS_FAILURE_LIMIT = env.int("LOGIN_ADDRESS_FAILURE_LIMIT", default=20)
AXES_VERBOSE = False

# Panel tunables.
PROVIDER_TIMEOUT = env.float("PROVIDER_TIMEOUT", default=60.0)
PROVIDER_MAX_RETRIES = env.int("PROVIDER_MAX_RETRIES", default=1)
# Base URLs may only lead to public addresses, except these exact host:port pairs (a local
# model server): api_manager/providers/netguard.py.
PROVIDER_PRIVATE_HOSTS = env.list("PROVIDER_PRIVATE_HOSTS", default=[])
# SDK clients kept per worker (each holds its connection pool), least recently used closed.
PROVIDER_CLIENT_CACHE_SIZE = env.int("PROVIDER_CLIENT_CACHE_SIZE", default=32)
# Provider connections one SDK client (one key, one worker) may hold at once: each running
# reply holds one. The SDKs' own default (1,000) made a worker's 1,001st reply on one key wait
# for another to end (bench/RESULTS.md, idle streams).
PROVIDER_MAX_CONNECTIONS = env.int("PROVIDER_MAX_CONNECTIONS", default=10000)
# Live key tests and model listings per user per minute (each one is a call to a provider).
PROVIDER_CHECKS_PER_MINUTE = env.int("PROVIDER_CHECKS_PER_MINUTE", default=10)
FILE_ACTIONS_ROOT = env.str("FILE_ACTIONS_ROOT", default="") or None
CHAT_MAX_MESSAGE_CHARS = env.int("CHAT_MAX_MESSAGE_CHARS", default=32000)
CHAT_CONTEXT_CHARS = env.int("CHAT_CONTEXT_CHARS", default=48000)
# The most a budgeted key's turn may reply (lowered to what its budget has left), and the cap
# sent to Anthropic, which requires one. Other turns send no cap: the model's own maximum.
CHAT_MAX_OUTPUT_TOKENS = env.int("CHAT_MAX_OUTPUT_TOKENS", default=4096)
CHAT_HEARTBEAT_SECONDS = env.float("CHAT_HEARTBEAT_SECONDS", default=15.0)
# Replies are jobs of the worker, not of the request (ai_chat/jobs.py).
CHAT_MAX_REPLY_SECONDS = env.float("CHAT_MAX_REPLY_SECONDS", default=600.0)
CHAT_MAX_RUNNING_REPLIES = env.int("CHAT_MAX_RUNNING_REPLIES", default=3)
# Chat turns a worker starts at once; the next ones wait in order of arrival (ai_chat/turn_gate.py).
# 0: no limit. Raise it when the database is on another machine.
CHAT_TURN_STARTS_AT_ONCE = env.int("CHAT_TURN_STARTS_AT_ONCE", default=1)
# On a graceful restart, how long running replies may go on before they are saved as
# interrupted: under gunicorn's graceful timeout (deploy/gunicorn.conf.py), which kills.
CHAT_SHUTDOWN_SECONDS = env.float(
    "CHAT_SHUTDOWN_SECONDS", default=max(1.0, env.float("GUNICORN_GRACEFUL_TIMEOUT", 300.0) - 10)
)
# Each worker looks for Stop requests made on other workers this often (one query for all of
# its running replies), and saves their text so far this often (one UPDATE for all).
CHAT_STOP_POLL_SECONDS = env.float("CHAT_STOP_POLL_SECONDS", default=0.05)
CHAT_CHECKPOINT_SECONDS = env.float("CHAT_CHECKPOINT_SECONDS", default=1.0)
CHAT_PAGE_MESSAGES = env.int("CHAT_PAGE_MESSAGES", default=50)
# Attachments (ai_chat/attachments.py): per message, per file, and all of a message's files
# together (nginx's body limit on the stream location is this total plus room for the text).
CHAT_MAX_ATTACHMENTS = env.int("CHAT_MAX_ATTACHMENTS", default=5)
CHAT_MAX_ATTACHMENT_BYTES = env.int("CHAT_MAX_ATTACHMENT_BYTES", default=10 * 1024 * 1024)
CHAT_MAX_ATTACHMENTS_TOTAL_BYTES = env.int(
    "CHAT_MAX_ATTACHMENTS_TOTAL_BYTES", default=20 * 1024 * 1024
)
CHAT_ATTACHMENT_PDF_NATIVE = env.bool("CHAT_ATTACHMENT_PDF_NATIVE", default=True)
# Images are scaled down to this long side (what both providers use without resizing again)
# and refused above this many pixels before they are decoded (decompression bombs).
CHAT_IMAGE_MAX_SIDE = env.int("CHAT_IMAGE_MAX_SIDE", default=1568)
CHAT_IMAGE_MAX_PIXELS = env.int("CHAT_IMAGE_MAX_PIXELS", default=40_000_000)
# Serve attachments through nginx (X-Accel-Redirect to the internal /_attachments/ location of
# deploy/nginx.conf); off, the view streams the file itself.
CHAT_ATTACHMENTS_X_ACCEL = env.bool("CHAT_ATTACHMENTS_X_ACCEL", default=False)
# Stored files are readable by their owner and group only: in the deploy the attachments'
# directories are setgid to nginx's group (deploy/install.sh), which reads them and nothing else.
FILE_UPLOAD_PERMISSIONS = 0o640

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact_secrets": {"()": "core.logging.RedactSecretsFilter"}},
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "filters": ["redact_secrets"],
            "formatter": "plain",
        }
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        "django": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
}

# The assistant's actions (ai_chat/actions). Queryable models, their allowed fields (relations
# included: a relation may only be followed to another model listed here) and the path to
# each row's owner: non-superusers see only their own rows.
ACTIONS_QUERY_MODELS = {
    "Conversation": {
        "model": "ai_chat.Conversation",
        "fields": [
            "id",
            "title",
            "model",
            "system_prompt",
            "created_at",
            "updated_at",
            "owner",
            "messages",
        ],
        "owner": "owner",
    },
    "Message": {
        "model": "ai_chat.Message",
        "fields": [
            "id",
            "conversation",
            "role",
            "content",
            "status",
            "error_code",
            "model",
            "usage",
            "first_token_ms",
            "total_ms",
            "created_at",
        ],
        "owner": "conversation__owner",
    },
    "UsageRecord": {
        "model": "api_manager.UsageRecord",
        "fields": [
            "id",
            "key_label",
            "user",
            "provider",
            "model",
            "input_tokens",
            "output_tokens",
            "estimated",
            "cost",
            "first_token_ms",
            "total_ms",
            "status",
            "error_code",
            "created_at",
        ],
        "owner": "user",
    },
    "User": {
        "model": "auth.User",
        "fields": [
            "id",
            "username",
            "first_name",
            "last_name",
            "is_active",
            "date_joined",
            "conversations",
            "usage",
        ],
        "owner": "id",
    },
}
ACTIONS_QUERY_MAX_ROWS = env.int("ACTIONS_QUERY_MAX_ROWS", default=500)
ACTIONS_QUERY_MAX_OFFSET = env.int("ACTIONS_QUERY_MAX_OFFSET", default=10_000)
ACTIONS_QUERY_MAX_BYTES = env.int("ACTIONS_QUERY_MAX_BYTES", default=1_000_000)
FILE_ACTIONS_EXTENSIONS = env.list(
    "FILE_ACTIONS_EXTENSIONS",
    default=[
        ".py",
        ".md",
        ".txt",
        ".rst",
        ".js",
        ".ts",
        ".css",
        ".html",
        ".json",
        ".yaml",
        ".yml",
        ".toml",
        ".sql",
        ".csv",
    ],
)
FILE_ACTIONS_DENY_NAMES = [
    "settings.py",
    "manage.py",
    "wsgi.py",
    "asgi.py",
    "conftest.py",
    "setup.py",
]
FILE_ACTIONS_MAX_APPEND_BYTES = env.int("FILE_ACTIONS_MAX_APPEND_BYTES", default=64 * 1024)
FILE_ACTIONS_MAX_FILE_BYTES = env.int("FILE_ACTIONS_MAX_FILE_BYTES", default=1024 * 1024)
FILE_ACTIONS_TOKEN_SECONDS = env.int("FILE_ACTIONS_TOKEN_SECONDS", default=600)
