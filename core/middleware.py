"""Middleware of our own."""

from __future__ import annotations

import csp.middleware as csp
from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.contrib.auth import middleware as auth
from django.contrib.messages import middleware as messages
from django.contrib.sessions import middleware as sessions
from django.core.handlers import asgi
from django.http import HttpRequest, HttpResponseBase
from django.middleware import clickjacking, common, csrf, locale, security
from whitenoise.middleware import WhiteNoiseMiddleware

from core import db


class StaticFilesMiddleware(WhiteNoiseMiddleware):
    """WhiteNoise, able to run in an async middleware chain.

    WhiteNoise's middleware is sync-only, so under ASGI Django would run every request
    (chat streams included) through a thread to pass it. Here a request that is not for a
    static file goes straight on, in the event loop; only static files (served by nginx in
    production) are handed to WhiteNoise in a thread.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response) -> None:  # type: ignore[no-untyped-def]
        super().__init__(get_response)
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest):  # type: ignore[no-untyped-def]
        if self.is_async:
            return self.__acall__(request)
        return super().__call__(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        if self.autorefresh:
            static_file = await sync_to_async(self.find_file)(request.path_info)
        else:
            static_file = self.files.get(request.path_info)
        if static_file is not None:
            return await sync_to_async(self.serve)(static_file, request)
        return await self.get_response(request)


# -- Django's middleware, with their hooks run in the event loop ---------------------------------
#
# Django's own middleware are "async-capable", but under ASGI `MiddlewareMixin` runs every
# `process_request`, `process_view` and `process_response` hook through `sync_to_async`: with
# our MIDDLEWARE that was 18 trips to a thread (and back through the event loop) per request,
# chat streams included. The hooks of these middleware only read headers and cookies and
# set headers, so they run in the event loop directly. The hooks that can reach the database
# or the cache (a modified session to save, messages to store, the user to load) still go to
# a thread, and only when they have that work to do.
#
# MIDDLEWARE keeps Django's paths, which the deploy checks (`check --deploy`) look for;
# `ASGIHandler` (bsepar_panel/asgi.py) loads the subclasses below in their place.


class InlineHooksMixin:
    """Run a `MiddlewareMixin`'s hooks in the event loop under ASGI (see above).

    `needs_thread(request, response)` says when `process_response` has I/O to do and must run
    in a thread after all. Under WSGI nothing changes.
    """

    def __init__(self, get_response) -> None:  # type: ignore[no-untyped-def]
        super().__init__(get_response)  # type: ignore[call-arg]
        if iscoroutinefunction(self) and hasattr(self, "process_view"):
            # Django adapts `process_view` when it loads the middleware: an async one is
            # awaited as is, a sync one would go through a thread.
            sync_hook = self.process_view

            async def process_view(request, view_func, view_args, view_kwargs):  # type: ignore[no-untyped-def]
                return sync_hook(request, view_func, view_args, view_kwargs)

            self.process_view = process_view

    def needs_thread(self, request: HttpRequest, response: HttpResponseBase) -> bool:
        return False

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        response = None
        if hasattr(self, "process_request"):
            response = self.process_request(request)
        response = response or await self.get_response(request)
        if hasattr(self, "process_response"):
            if self.needs_thread(request, response):
                return await sync_to_async(self.process_response)(request, response)
            response = self.process_response(request, response)
        return response


class SecurityMiddleware(InlineHooksMixin, security.SecurityMiddleware):
    pass


class CSPMiddleware(InlineHooksMixin, csp.CSPMiddleware):
    pass


class SessionMiddleware(InlineHooksMixin, sessions.SessionMiddleware):
    """Loading the session is lazy (it happens where `request.session` is read); saving it
    happens here, in a thread, only when it changed."""

    def needs_thread(self, request: HttpRequest, response: HttpResponseBase) -> bool:
        session = getattr(request, "session", None)
        return session is not None and (session.modified or settings.SESSION_SAVE_EVERY_REQUEST)


class LocaleMiddleware(InlineHooksMixin, locale.LocaleMiddleware):
    pass


class CommonMiddleware(InlineHooksMixin, common.CommonMiddleware):
    pass


class CsrfViewMiddleware(InlineHooksMixin, csrf.CsrfViewMiddleware):
    """The token comes from the cookie (CSRF_USE_SESSIONS is off) and the body, which Django
    has read before the view runs under ASGI."""


class AuthenticationMiddleware(InlineHooksMixin, auth.AuthenticationMiddleware):
    """Sets `request.user` as a lazy object; nothing is loaded here."""


class LoginRequiredMiddleware(InlineHooksMixin, auth.LoginRequiredMiddleware):
    """Loads the user (session, then user row) in one trip to a database thread (core.db),
    then decides inline."""

    def __init__(self, get_response) -> None:  # type: ignore[no-untyped-def]
        super().__init__(get_response)
        if iscoroutinefunction(self):
            self.process_view = self.aprocess_view

    async def aprocess_view(self, request, view_func, view_args, view_kwargs):  # type: ignore[no-untyped-def]
        if not getattr(view_func, "login_required", True):
            return None
        if await db.run(_is_authenticated, request):
            return None
        return self.handle_no_permission(request, view_func)


def _is_authenticated(request: HttpRequest) -> bool:
    return request.user.is_authenticated


class MessageMiddleware(InlineHooksMixin, messages.MessageMiddleware):
    def needs_thread(self, request: HttpRequest, response: HttpResponseBase) -> bool:
        # Storing messages may fall back to the session; only read or added ones are stored.
        storage = getattr(request, "_messages", None)
        return storage is not None and (storage.used or storage.added_new)


class XFrameOptionsMiddleware(InlineHooksMixin, clickjacking.XFrameOptionsMiddleware):
    pass


INLINE = {
    "django.middleware.security.SecurityMiddleware": SecurityMiddleware,
    "csp.middleware.CSPMiddleware": CSPMiddleware,
    "django.contrib.sessions.middleware.SessionMiddleware": SessionMiddleware,
    "django.middleware.locale.LocaleMiddleware": LocaleMiddleware,
    "django.middleware.common.CommonMiddleware": CommonMiddleware,
    "django.middleware.csrf.CsrfViewMiddleware": CsrfViewMiddleware,
    "django.contrib.auth.middleware.AuthenticationMiddleware": AuthenticationMiddleware,
    "django.contrib.auth.middleware.LoginRequiredMiddleware": LoginRequiredMiddleware,
    "django.contrib.messages.middleware.MessageMiddleware": MessageMiddleware,
    "django.middleware.clickjacking.XFrameOptionsMiddleware": XFrameOptionsMiddleware,
}


class ASGIHandler(asgi.ASGIHandler):
    """Django's ASGI handler, building its middleware chain from `INLINE`'s subclasses."""

    def load_middleware(self, is_async: bool = False) -> None:
        configured = settings.MIDDLEWARE
        settings.MIDDLEWARE = [
            f"{INLINE[path].__module__}.{INLINE[path].__qualname__}" if path in INLINE else path
            for path in configured
        ]
        try:
            super().load_middleware(is_async=is_async)
        finally:
            settings.MIDDLEWARE = configured
