from django.urls import path

from ai_chat.actions import views

app_name = "actions"
urlpatterns = [
    path("query/", views.query_view, name="query"),
    path("append/", views.append_view, name="append"),
    path("append/confirm/", views.confirm_view, name="confirm"),
    path("changes/<int:pk>/undo/", views.undo_view, name="undo"),
]
