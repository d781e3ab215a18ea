"""Typing helpers for views."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.http import HttpRequest


class AuthenticatedHttpRequest(HttpRequest):
    """A request behind LoginRequiredMiddleware: `user` is a real User."""

    user: User
