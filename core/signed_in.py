"""What every response to a signed-in user needs, in one small async-capable middleware.

- `Cache-Control: no-store` (Django's never-cache headers, merged with what a view set): a page
  holding someone's data must not be kept by the browser or a shared cache, where the back button
  or the next user of the machine would find it after sign-out. Every response that reaches this
  middleware gets it (static files are answered earlier, by WhiteNoise or nginx, and keep their
  long caching): deciding "signed in" per response would cost a session read on public pages,
  and the login form (it holds a CSRF token) should not be cached either.
- The request is remembered for the duration of the request (a context variable, so it follows
  the request into sync_to_async threads) so that the security event log can name who did
  something and from where, even when a model signal carries no request.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponseBase
from django.utils.cache import add_never_cache_headers

current_request: contextvars.ContextVar[HttpRequest | None] = contextvars.ContextVar(
    "bsepar_current_request", default=None
)


class SignedInMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(
        self, get_response: Callable[[HttpRequest], HttpResponseBase | Awaitable[HttpResponseBase]]
    ) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest):  # type: ignore[no-untyped-def]
        if self.is_async:
            return self.__acall__(request)
        token = current_request.set(request)
        try:
            response = self.get_response(request)
        finally:
            current_request.reset(token)
        add_never_cache_headers(response)
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        token = current_request.set(request)
        try:
            response = await self.get_response(request)  # type: ignore[misc]
        finally:
            current_request.reset(token)
        add_never_cache_headers(response)
        return response
