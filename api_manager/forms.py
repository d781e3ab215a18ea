"""The key form. Every bad input gets a clear message and creates nothing."""

from __future__ import annotations

import unicodedata

from django import forms
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from api_manager.models import ProviderName, validate_base_url
from core.templatetags.panel import without_credentials

MAX_KEY_LENGTH = 512


def has_control_characters(value: str) -> bool:
    return any(unicodedata.category(ch) in {"Cc", "Cf", "Zl", "Zp"} for ch in value)


class URLWithoutCredentialsInput(forms.URLInput):
    """A URL input that never shows `user:password@` back, even for a refused form."""

    def format_value(self, value: object) -> str | None:
        formatted = super().format_value(value)
        return without_credentials(formatted) if formatted else formatted


class ProviderKeyForm(forms.Form):
    # The widgets' attributes are what the settings page's wizard shows: the template renders
    # these bound fields as they are, so the page cannot drift from the form.
    provider = forms.ChoiceField(
        label=_("Provider"),
        choices=ProviderName.choices,
        initial=ProviderName.OPENAI,
        widget=forms.RadioSelect,
    )
    label = forms.CharField(
        label=_("Label"),
        max_length=100,
        widget=forms.TextInput(attrs={"dir": "auto", "placeholder": _("e.g. Team OpenAI")}),
    )
    api_key = forms.CharField(
        label=_("API key"),
        strip=False,
        error_messages={"required": _("Paste the API key.")},
        widget=forms.PasswordInput(
            render_value=False,
            attrs={"autocomplete": "off", "spellcheck": "false", "class": "mono"},
        ),
    )
    base_url = forms.CharField(
        label=_("Base URL"),
        required=False,
        max_length=500,
        widget=URLWithoutCredentialsInput(
            attrs={"class": "mono", "placeholder": "https://api.openai.com/v1"}
        ),
        help_text=_(
            "Optional: any OpenAI- or Anthropic-compatible endpoint (a proxy, OpenRouter, a local server)."
        ),
    )
    default_model = forms.CharField(
        label=_("Default model"),
        required=False,
        max_length=200,
        widget=forms.TextInput(
            attrs={
                "class": "mono",
                "list": "model-options",
                "placeholder": "gpt-4o-mini / claude-sonnet-4-6",
            }
        ),
    )
    shared = forms.BooleanField(label=_("Share with the team"), required=False)
    monthly_token_budget = forms.IntegerField(
        label=_("Monthly token budget"), required=False, min_value=1, max_value=10**15
    )
    # A key is tested live when it is saved; one that fails is saved only when this is ticked.
    save_anyway = forms.BooleanField(
        label=_("Save anyway, even if the live test fails"), required=False
    )

    def __init__(self, *args: object, require_label: bool = True, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.fields["label"].required = require_label

    def clean_label(self) -> str:
        label = self.cleaned_data["label"].strip()
        if has_control_characters(label):
            raise ValidationError(_("The label contains control characters."))
        return label

    def clean_api_key(self) -> str:
        key = self.cleaned_data.get("api_key", "").strip()
        if not key:
            raise ValidationError(_("Paste the API key."))
        if len(key) > MAX_KEY_LENGTH:
            raise ValidationError(
                _("That is too long to be an API key (at most %(n)d characters).")
                % {"n": MAX_KEY_LENGTH}
            )
        if has_control_characters(key) or any(ch.isspace() for ch in key):
            raise ValidationError(
                _("The key contains spaces, line breaks or control characters: paste only the key.")
            )
        if len(key) < 8:
            raise ValidationError(_("That is too short to be an API key."))
        return key

    def clean_base_url(self) -> str:
        url = self.cleaned_data.get("base_url", "").strip()
        if not url:
            return ""
        # The model's own check (the admin's form runs it too); resolves the name: only public
        # addresses (or an allowed local server) pass.
        validate_base_url(url)
        return url.rstrip("/")

    def clean_default_model(self) -> str:
        model = self.cleaned_data.get("default_model", "").strip()
        if has_control_characters(model) or any(ch.isspace() for ch in model):
            raise ValidationError(_("A model name has no spaces or control characters."))
        return model

    def clean(self) -> dict[str, object]:
        data = super().clean()
        provider, key = data.get("provider"), data.get("api_key")
        if provider and key:
            if provider == ProviderName.OPENAI and key.startswith("sk-ant-"):
                self.add_error(
                    "api_key",
                    _(
                        "This looks like an Anthropic key (sk-ant-…): choose Anthropic as the provider."
                    ),
                )
            elif (
                provider == ProviderName.ANTHROPIC
                and key.startswith("sk-")
                and not key.startswith(("sk-ant-", "sk-or-"))
            ):
                self.add_error(
                    "api_key",
                    _("This looks like an OpenAI key (sk-…): choose OpenAI as the provider."),
                )
        return data
