"""Django's deploy checks, run on the security middlewares as core.middleware has them.

Django's `check --deploy` looks for its security middlewares by their paths in MIDDLEWARE
(`django.middleware.security.SecurityMiddleware` and so on), and checks HSTS, the HTTPS
redirect, nosniff, the referrer and opener policies, X-Frame-Options and the CSRF cookie only
when it finds them. The panel lists its subclasses of them instead (core/middleware.py: the same
hooks, run in the event loop), so here Django's own check functions run once more with each
subclass in the place of Django's class. What Django's own run says about the middlewares
being missing (security.W001, W002, W003) is silenced in settings; this run says it, as
core.W001, W002, W003, when one of them is missing indeed.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Tags, register
from django.core.checks.security import base, csrf
from django.test.utils import override_settings

# Django's path of each subclass in core.middleware.
DJANGOS = {
    "core.middleware.SecurityMiddleware": "django.middleware.security.SecurityMiddleware",
    "core.middleware.SessionMiddleware": "django.contrib.sessions.middleware.SessionMiddleware",
    "core.middleware.CsrfViewMiddleware": "django.middleware.csrf.CsrfViewMiddleware",
    "core.middleware.XFrameOptionsMiddleware": (
        "django.middleware.clickjacking.XFrameOptionsMiddleware"
    ),
}

# Django's deploy checks that look for those middlewares by path. (The session cookie checks
# hold for the installed sessions app whatever the middleware's path: they run as they are.)
CHECKS = (
    base.check_security_middleware,
    base.check_xframe_options_middleware,
    base.check_sts,
    base.check_sts_include_subdomains,
    base.check_sts_preload,
    base.check_content_type_nosniff,
    base.check_ssl_redirect,
    base.check_xframe_deny,
    base.check_referrer_policy,
    base.check_cross_origin_opener_policy,
    csrf.check_csrf_middleware,
    csrf.check_csrf_cookie_secure,
)

# The middleware-missing warnings, which Django's own run raises for every subclass.
MISSING = {"security.W001": "core.W001", "security.W002": "core.W002", "security.W003": "core.W003"}


@register(Tags.security, deploy=True)
def security_middlewares(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    listed = [DJANGOS.get(path, path) for path in settings.MIDDLEWARE]
    # Only for the length of the checks, which run before the server serves.
    with override_settings(MIDDLEWARE=listed):
        found = [message for check in CHECKS for message in check(app_configs)]
    return [
        type(message)(
            message.msg, hint=message.hint, obj=message.obj, id=MISSING.get(message.id, message.id)
        )
        for message in found
    ]
