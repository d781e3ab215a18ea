"""Async-capable middleware of our own, each listed by its path in `settings.MIDDLEWARE`.

Under ASGI Django's `MiddlewareMixin` sends every `process_request`, `process_view` and
`process_response` hook through `sync_to_async`, a trip to the request's thread and back through
the event loop for each, chat streams included. For the middleware below the hooks only read
and set headers, cookies and request attributes, so under ASGI they run in the event loop;
the few that can reach the database or the cache still go to a thread, and only when they have
that work to do. Under WSGI and Django's sync test client they are Django's own, unchanged.

Django's security middlewares (`SecurityMiddleware`, `SessionMiddleware`, `CsrfViewMiddleware`,
`XFrameOptionsMiddleware`) stay in MIDDLEWARE by their own paths, stock: `check --deploy` looks
for those paths, and a subclass elsewhere would turn its checks off. Their hooks cost a thread
trip each: 8 per request, measured at +0.3–0.45 ms of CPU per request (bench/RESULTS.md,
"Public APIs only"), the price of keeping the deploy checks.
"""

from __future__ import annotations

from typing import Any

import csp.middleware as csp
from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.contrib.auth import middleware as auth
from django.contrib.messages import middleware as messages
from django.http import HttpRequest, HttpResponseBase
from django.middleware import common, locale
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
