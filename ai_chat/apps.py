from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class AiChatConfig(AppConfig):
    name = "ai_chat"
    verbose_name = _("AI chat")

    def ready(self) -> None:
        # Registers the FILE_ACTIONS_ROOT system check.
        from ai_chat.actions import checks  # noqa: F401
