"""Typing helpers for views, and the one reader of JSON request bodies."""

from __future__ import annotations

import json
from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest
from django.utils.translation import gettext as _


class AuthenticatedHttpRequest(HttpRequest):
    """A request behind LoginRequiredMiddleware: `user` is a real User."""

    user: User


class InvalidBody(ValueError):
    """The request body is not a JSON object; the message is safe to show."""


def read_json_body(request: HttpRequest) -> dict[str, Any]:
    """The request body as a JSON object (an empty body is `{}`).

    Raises InvalidBody for a body over DATA_UPLOAD_MAX_MEMORY_SIZE, one that is not UTF-8 JSON,
    one nested too deep for the parser (a 100,000-deep `[[[...` raises RecursionError, which
    must not become a 500), or one that is not an object.
    """
    try:
        raw = request.body
    except RequestDataTooBig:
        raise InvalidBody(_("The request is too large.")) from None
    try:
        data = json.loads(raw or b"{}")
    except RecursionError:
        raise InvalidBody(_("The request body is nested too deeply.")) from None
    except (ValueError, UnicodeDecodeError):
        raise InvalidBody(_("The request body is not valid JSON.")) from None
    if not isinstance(data, dict):
        raise InvalidBody(_("The request body must be a JSON object."))
    return data


def body_excerpt(request: HttpRequest, limit: int = 2000) -> str:
    """The start of the body as text, for an audit row of a refused body."""
    try:
        return request.body[:limit].decode(errors="replace")
    except RequestDataTooBig:
        return "(body too large)"
