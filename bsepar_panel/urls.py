"""The panel's URLs. Every page needs a signed-in user except those marked login_not_required."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.urls import include, path
from django.views.i18n import set_language

from core.views import healthz
from users import views as user_views

urlpatterns = [
    path("login/", user_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("password/", user_views.PasswordChangeView.as_view(), name="password_change"),
    path("i18n/setlang/", login_not_required(set_language), name="set_language"),
    path("healthz", healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("api-manager/", include("api_manager.urls")),
    path("ai-chat/", include("ai_chat.urls")),
    path("api/actions/", include("ai_chat.actions.urls")),
    path("", include("dashboard.urls")),
]

admin.site.site_header = "bsepar panel"
admin.site.site_title = "bsepar panel"
