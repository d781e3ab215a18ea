from django.urls import path

from ai_chat import attachment_views, export, sidebar, views

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
    path("stream/<int:message_id>/", views.reattach, name="reattach"),
    path("messages/<int:message_id>/stop/", views.stop, name="stop"),
    path("messages/<int:message_id>/version/", views.switch_version, name="switch_version"),
    path("attachments/<int:pk>/", attachment_views.attachment, name="attachment"),
]
