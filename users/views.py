"""Sign-in, sign-out and the password change, on django.contrib.auth's views with our templates.

Axes (settings.AXES_*) refuses a locked-out (username, address) pair before the view runs;
users/throttle.py refuses an address that has failed too often, whatever the usernames.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse_lazy
from django.utils.decorators import method_decorator
from django.utils.translation import gettext as _
from django.views.decorators.debug import sensitive_post_parameters

from users import throttle


@method_decorator(login_not_required, name="dispatch")
class LoginView(auth_views.LoginView):
    redirect_authenticated_user = True

    def post(self, request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        # The same page and status as an axes lockout: an attacker learns nothing more.
        if throttle.is_throttled(request):
            return render(request, "registration/locked_out.html", status=429)
        return super().post(request, *args, **kwargs)


@method_decorator(sensitive_post_parameters(), name="dispatch")
class PasswordChangeView(auth_views.PasswordChangeView):
    """Change one's own password. Django's view keeps this session signed in
    (update_session_auth_hash); every other session of the user stops matching the new
    password hash and is refused on its next request, on every worker."""

    template_name = "users/password_change.html"
    success_url = reverse_lazy("dashboard:index")

    def get_context_data(self, **kwargs: object) -> dict[str, object]:
        return super().get_context_data(page="password", **kwargs)

    def form_valid(self, form):  # type: ignore[no-untyped-def]
        response = super().form_valid(form)
        messages.success(self.request, _("Password changed. Your other sessions were signed out."))
        return response
