"""Async-capable middleware of our own, each listed by its path in `settings.MIDDLEWARE`.

Under ASGI Django's `MiddlewareMixin` sends every `process_request`, `process_view` and
`process_response` hook through `sync_to_async`, a trip to the request's thread and back through
the event loop for each, chat streams included. For the middleware below the hooks only read
and set headers, cookies and request attributes, so under ASGI they run in the event loop;
the few that can reach the database, the cache or the disk still go to a thread, and only when
they have that work to do. Under WSGI and Django's sync test client they are Django's own,
unchanged.

That includes Django's security middlewares (security, sessions, CSRF, clickjacking): their
hooks took 8 thread trips per request, ~1 ms of a chat turn's time to first token (bench/
RESULTS.md, "Turn starts one at a time"). `check --deploy` looks for them by Django's paths;
core/checks.py runs those checks on these subclasses as on Django's own.
"""

from __future__ import annotations

from typing import Any

import csp.middleware as csp
from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.contrib.auth import middleware as auth
from django.contrib.messages import middleware as messages
from django.contrib.sessions import middleware as sessions
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
            return self.acall(request)
        return super().__call__(request)

    async def acall(self, request: HttpRequest) -> HttpResponseBase:
        if self.autorefresh:
            static_file = await sync_to_async(self.find_file)(request.path_info)
        else:
            static_file = self.files.get(request.path_info)
        if static_file is not None:
            return await sync_to_async(self.serve)(static_file, request)
        return await self.get_response(request)


class HooksInEventLoop:
    """Base for the subclasses of Django's (or django-csp's) middleware below: in an async
    chain, `__call__` runs the class's own `process_request` and `process_response` in the
    event loop. `needs_thread(request, response)` says when `process_response` has I/O to do
    and must run in a thread after all. In a sync chain the parent's `__call__` runs."""

    get_response: Any

    def __init__(self, get_response) -> None:  # type: ignore[no-untyped-def]
        super().__init__(get_response)  # type: ignore[call-arg]
        # MiddlewareMixin marks the instance a coroutine function when get_response is one.
        self.in_event_loop = iscoroutinefunction(get_response)

    def __call__(self, request: HttpRequest):  # type: ignore[no-untyped-def]
        if self.in_event_loop:
            return self.acall(request)
        return super().__call__(request)  # type: ignore[misc]

    def needs_thread(self, request: HttpRequest, response: HttpResponseBase) -> bool:
        return False

    async def acall(self, request: HttpRequest) -> HttpResponseBase:
        response = None
        if hasattr(self, "process_request"):
            response = self.process_request(request)
        response = response or await self.get_response(request)
        if hasattr(self, "process_response"):
            if self.needs_thread(request, response):
                return await sync_to_async(self.process_response)(request, response)
            response = self.process_response(request, response)
        return response


class CSPMiddleware(HooksInEventLoop, csp.CSPMiddleware):
    """django-csp's: a lazy nonce on the request, the header on the response."""


class LocaleMiddleware(HooksInEventLoop, locale.LocaleMiddleware):
    """Django's: the language from the cookie or Accept-Language; Vary and Content-Language."""


class CommonMiddleware(HooksInEventLoop, common.CommonMiddleware):
    """Django's: APPEND_SLASH redirects (resolving a URL is CPU work), Content-Length."""


class AuthenticationMiddleware(HooksInEventLoop, auth.AuthenticationMiddleware):
    """Django's: sets `request.user` as a lazy object; nothing is loaded here."""


class LoginRequiredMiddleware(HooksInEventLoop, auth.LoginRequiredMiddleware):
    """Django's, with the user (session, then user row) loaded in one trip to a database
    thread (core.db) in an async chain; the decision is then made in the event loop."""

    def __init__(self, get_response) -> None:  # type: ignore[no-untyped-def]
        super().__init__(get_response)
        if self.in_event_loop:
            # Django awaits an async `process_view` as it is (a sync one would go to a thread).
            self.process_view = self.aprocess_view  # type: ignore[method-assign]

    async def aprocess_view(self, request, view_func, view_args, view_kwargs):  # type: ignore[no-untyped-def]
        if not getattr(view_func, "login_required", True):
            return None
        if await db.run(_is_authenticated, request):
            return None
        return self.handle_no_permission(request, view_func)


def _is_authenticated(request: HttpRequest) -> bool:
    # Evaluates the lazy `request.user`, so the view finds it loaded.
    return request.user.is_authenticated


class MessageMiddleware(HooksInEventLoop, messages.MessageMiddleware):
    """Django's. Storing messages may fall back to the session (a load from the cache or the
    database): only read or added messages are stored, and only then in a thread."""

    def needs_thread(self, request: HttpRequest, response: HttpResponseBase) -> bool:
        storage = getattr(request, "_messages", None)
        return storage is not None and (storage.used or storage.added_new)


class SecurityMiddleware(HooksInEventLoop, security.SecurityMiddleware):
    """Django's: the HTTPS redirect, HSTS and the other security headers."""


class SessionMiddleware(HooksInEventLoop, sessions.SessionMiddleware):
    """Django's: a lazy session on the request (loaded by whoever reads it first: the user's
    load goes to a database thread, core.db); saving a changed one goes to a thread."""

    def needs_thread(self, request: HttpRequest, response: HttpResponseBase) -> bool:
        session = getattr(request, "session", None)
        return session is not None and (session.modified or settings.SESSION_SAVE_EVERY_REQUEST)


class CsrfViewMiddleware(HooksInEventLoop, csrf.CsrfViewMiddleware):
    """Django's. The token check runs in the event loop unless it has I/O to do: a token kept
    in the session (CSRF_USE_SESSIONS), or a multipart body to read (an upload, whose files may
    be written to disk while it is parsed), which go to a thread as before."""

    def __init__(self, get_response) -> None:  # type: ignore[no-untyped-def]
        super().__init__(get_response)
        if self.in_event_loop:
            self._sync_process_view = self.process_view
            # Django awaits an async `process_view` as it is (a sync one would go to a thread).
            self.process_view = self.aprocess_view  # type: ignore[method-assign]

    async def acall(self, request: HttpRequest) -> HttpResponseBase:
        if settings.CSRF_USE_SESSIONS:
            # The token is read from (and kept in) the session: Django's hooks, in a thread.
            response = await sync_to_async(super().process_request)(request)
            response = response or await self.get_response(request)
            return await sync_to_async(self.process_response)(request, response)
        return await super().acall(request)

    async def aprocess_view(self, request, view_func, view_args, view_kwargs):  # type: ignore[no-untyped-def]
        if settings.CSRF_USE_SESSIONS or request.content_type == "multipart/form-data":
            return await sync_to_async(self._sync_process_view)(
                request, view_func, view_args, view_kwargs
            )
        return self._sync_process_view(request, view_func, view_args, view_kwargs)


class XFrameOptionsMiddleware(HooksInEventLoop, clickjacking.XFrameOptionsMiddleware):
    """Django's: the X-Frame-Options header."""
