from django.urls import path

from ai_chat import views

app_name = "ai_chat"
urlpatterns = [
    path("", views.chat_page, name="new"),
]
