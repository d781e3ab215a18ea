"""The input of one chat turn (`POST /ai-chat/stream/`). Bad input gets a clear message.

The form checks only what the request says; whether the conversation, the key and the history
allow the turn is the service's business (ai_chat/services.py).
"""

from __future__ import annotations

import enum
from typing import Any

from django import forms
from django.conf import settings
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

# Ids are bigint primary keys: anything larger cannot name a row (and would overflow SQLite).
MAX_ID = 2**63 - 1
MAX_MODEL_CHARS = 200


class TurnKind(enum.StrEnum):
    """What a turn does: answer a new message, answer the last one again, go on after an
    action's result, or answer a new version of an earlier user message."""

    MESSAGE = "message"
    REGENERATE = "regenerate"
    CONTINUE = "continue"
    EDIT = "edit"


class TextField(forms.Field):
    """Text exactly as sent (not stripped): `None` when the field is absent, so a service can
    tell "not sent" from "sent empty". The NUL check is the form's, with its own message."""

    def to_python(self, value: Any) -> str | None:
        return None if value is None else str(value)


class FlagField(forms.Field):
    """A yes/no field that is on for 1, true, on or yes (any case), off for anything else;
    JSON's `true` counts as well."""

    def to_python(self, value: Any) -> bool:
        return str(value or "").lower() in {"1", "true", "on", "yes"}


class IdField(forms.Field):
    """An optional row id; `what` names it in the error."""

    def __init__(self, what: str, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        super().__init__(**kwargs)
        self.what = what

    def to_python(self, value: Any) -> int | None:
        if value in self.empty_values:
            return None
        try:
            number = int(value)
        except (TypeError, ValueError, OverflowError):  # OverflowError: JSON's Infinity
            number = 0
        # JSON's true and 1.5 are not ids (int() would take them for 1).
        fraction = isinstance(value, float) and not value.is_integer()
        if isinstance(value, bool) or fraction or not 0 < number <= MAX_ID:
            raise ValidationError(
                _("The %(what)s id is not valid.") % {"what": self.what}, code="invalid"
            )
        return number


class IdListField(forms.Field):
    """Row ids, repeated (`drop_attachments=3&drop_attachments=7`, or a JSON list); each one
    checked like IdField. Always a list (empty when absent)."""

    def __init__(self, what: str, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        super().__init__(**kwargs)
        self.one = IdField(what)

    def to_python(self, value: Any) -> list[int]:
        if value in self.empty_values:
            return []
        values = value if isinstance(value, list | tuple) else [value]
        if len(values) > settings.CHAT_MAX_ATTACHMENTS:
            raise ValidationError(_("Too many attachment ids."), code="invalid")
        ids = [self.one.clean(item) for item in values]
        return [pk for pk in ids if pk is not None]


class TurnForm(forms.Form):
    """`message`, `conversation`, `key`, `model`, `system`, `regenerate`, `continue`, `edit`,
    `drop_attachments`.

    Form-encoded or JSON (the view hands a dict). After `is_valid()`, `kind` says which kind of
    turn it is and `refusal()` gives the first error's message and HTTP status.
    """

    message = TextField(required=False)
    conversation = IdField("conversation")
    key = IdField("key")
    model = forms.CharField(required=False, max_length=None)
    system = TextField(required=False)
    regenerate = FlagField(required=False)
    # The id of the user message that `message` is a new version of.
    edit = IdField("message")
    # With `edit`: attachments of the edited message that its new version leaves out (every
    # other one is kept).
    drop_attachments = IdListField(gettext_lazy("attachment"))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # `continue` is a Python keyword: it cannot be declared as a class attribute.
        self.fields["continue"] = FlagField(required=False)

    @property
    def kind(self) -> TurnKind:
        if self.cleaned_data["regenerate"]:
            return TurnKind.REGENERATE
        if self.cleaned_data["continue"]:
            return TurnKind.CONTINUE
        if self.cleaned_data["edit"] is not None:
            return TurnKind.EDIT
        return TurnKind.MESSAGE

    def clean_model(self) -> str:
        model = self.cleaned_data["model"]
        if len(model) > MAX_MODEL_CHARS or any(ch.isspace() for ch in model):
            raise ValidationError(_("The model name is not valid."))
        return model

    def clean_system(self) -> str | None:
        system = self.cleaned_data["system"]
        # Cut, not refused: the prompt is a setting of the conversation, kept to a sane size.
        return None if system is None else system[: settings.CHAT_MAX_MESSAGE_CHARS]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        regenerate, resume = data.get("regenerate"), data.get("continue")
        if regenerate and resume:
            raise ValidationError(_("Choose either regenerate or continue."))
        if (regenerate or resume) and data.get("edit") is not None:
            raise ValidationError(_("An edit is a message of its own: no regenerate or continue."))
        if data.get("drop_attachments") and data.get("edit") is None:
            raise ValidationError(_("Attachments can only be removed from an edited message."))
        if data.get("edit") is not None and data.get("conversation") is None:
            if "conversation" not in self.errors:
                raise ValidationError(_("Say which conversation the edited message is in."))
        if regenerate or resume:
            if data.get("conversation") is None and "conversation" not in self.errors:
                raise ValidationError(_("Nothing to regenerate in a new conversation."))
            return data
        text = data.get("message") or ""
        data["message"] = text
        if not text.strip():
            self.add_error("message", _("Write a message first."))
        elif len(text) > settings.CHAT_MAX_MESSAGE_CHARS:
            self.add_error(
                "message",
                ValidationError(
                    _("The message is too long (%(n)d characters at most).")
                    % {"n": settings.CHAT_MAX_MESSAGE_CHARS},
                    code="too_long",
                ),
            )
        elif "\x00" in text:
            self.add_error("message", _("The message contains a NUL character."))
        return data

    def refusal(self) -> tuple[str, int]:
        """The first error's message and its HTTP status: 413 for a message too long, else 400.

        Errors of the whole form (conflicting flags) come first, then the fields in order.
        """
        errors = self.errors.as_data()
        for name in (NON_FIELD_ERRORS, *self.fields):
            for error in errors.get(name, ()):
                return " ".join(error.messages), 413 if error.code == "too_long" else 400
        raise ValueError("refusal() of a valid form")
