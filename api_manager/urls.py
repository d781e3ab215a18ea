from django.urls import path

from api_manager import views

app_name = "api_manager"
urlpatterns = [
    path("settings/", views.settings_page, name="settings"),
]
