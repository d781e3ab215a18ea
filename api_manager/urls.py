from django.urls import path

from api_manager import key_views, views

app_name = "api_manager"
urlpatterns = [
    path("settings/", views.settings_page, name="settings"),
    path("keys/add/", key_views.add_key, name="add"),
    path("keys/check/", views.check_new_key, name="check"),
    path("keys/<int:pk>/toggle/", views.toggle_key, name="toggle"),
    path("keys/<int:pk>/delete/", views.delete_key, name="delete"),
    path("keys/<int:pk>/test/", views.test_key, name="test"),
    path("keys/<int:pk>/usage/", views.key_usage, name="usage"),
    path("keys/<int:pk>/edit/", key_views.edit_key, name="edit"),
    path("keys/<int:pk>/models/", key_views.key_models, name="models"),
]
