from __future__ import annotations

from django.http import HttpResponse
from django.shortcuts import render

from core.http import AuthenticatedHttpRequest


def settings_page(request: AuthenticatedHttpRequest) -> HttpResponse:
    return render(request, "dashboard/index.html", {"page": "keys"})
