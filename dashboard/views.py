"""The dashboard: what the team has been doing, and what to do first."""

from __future__ import annotations

from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from core.http import AuthenticatedHttpRequest


@require_GET
def index(request: AuthenticatedHttpRequest) -> HttpResponse:
    return render(request, "dashboard/index.html", {"page": "dashboard"})
