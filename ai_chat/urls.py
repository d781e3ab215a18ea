from django.urls import path

from ai_chat import export, sidebar, views

app_name = "ai_chat"
urlpatterns = [
    path("", views.chat_page, name="new"),
    path("c/<int:pk>/", views.chat_page, name="conversation"),
    path("c/<int:pk>/rename/", views.rename, name="rename"),
    path("c/<int:pk>/delete/", views.delete, name="delete"),
    path("c/<int:pk>/export/", export.export, name="export"),
    path("c/<int:pk>/pin/", sidebar.pin, name="pin"),
    path("c/<int:pk>/m/<int:message_id>/actions/<str:call_id>/", views.decide, name="decide"),
    path("stream/", views.stream, name="stream"),
]
