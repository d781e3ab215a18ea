from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class AiChatConfig(AppConfig):
    name = "ai_chat"
    verbose_name = _("AI chat")
