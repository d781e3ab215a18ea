"""The form that edits a saved key: ProviderKeyForm's fields and checks (the SSRF checks of the
base URL included), without the provider, and with an optional secret (empty keeps it)."""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext_lazy as _

from api_manager.forms import ProviderKeyForm
from api_manager.models import ProviderKey

# The columns the edit form may change, in the order they are compared.
EDITABLE = ("label", "base_url", "default_model", "shared", "monthly_token_budget")


class KeyEditForm(ProviderKeyForm):
    def __init__(self, *args: Any, key: ProviderKey, **kwargs: Any) -> None:
        kwargs.setdefault("initial", {name: getattr(key, name) for name in EDITABLE})
        super().__init__(*args, **kwargs)
        self.key = key
        del self.fields["provider"]
        secret = self.fields["api_key"]
        secret.required = False
        secret.label = _("Replace the API key")
        secret.help_text = _("Leave empty to keep the current key.")

    def clean_api_key(self) -> str:
        if not self.cleaned_data.get("api_key", "").strip():
            return ""  # keep the stored secret
        return super().clean_api_key()

    def clean(self) -> dict[str, object]:
        # The provider cannot change: the pasted key is checked against the key's own.
        self.cleaned_data["provider"] = self.key.provider
        return super().clean()

    def changes(self) -> list[str]:
        """The editable columns whose cleaned value differs from the key's."""
        return [name for name in EDITABLE if self.cleaned_data.get(name) != getattr(self.key, name)]
