from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ApiManagerConfig(AppConfig):
    name = "api_manager"
    verbose_name = _("API keys")

    def ready(self) -> None:
        # Security events about keys (core.models.SecurityEvent); unsafe base URLs check.
        from api_manager import audit, checks  # noqa: F401
