"""The security event log: who signed in (or failed to, or was locked out) from where, and who
changed keys, permissions, groups or passwords. Written once, never edited; admins read it."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class SecurityEventKind(models.TextChoices):
    LOGIN = "login", _("signed in")
    LOGIN_FAILED = "login_failed", _("sign-in failed")
    LOCKED_OUT = "locked_out", _("locked out")
    LOGOUT = "logout", _("signed out")
    PASSWORD_CHANGED = "password_changed", _("password changed")
    KEY_ADDED = "key_added", _("key added")
    KEY_EDITED = "key_edited", _("key edited")
    KEY_SHARED = "key_shared", _("key sharing changed")
    KEY_DELETED = "key_deleted", _("key deleted")
    PERMISSIONS_CHANGED = "permissions_changed", _("permissions changed")
    GROUPS_CHANGED = "groups_changed", _("groups changed")
    ACCOUNT_CHANGED = "account_changed", _("account flags changed")


class AppendOnlyModel(models.Model):
    """A log whose rows are written once: saving an existing row or deleting one raises
    PermissionError naming the log (`log_name`). Abstract: no table, no migration of its own.
    Queryset updates and deletes bypass it (the admin offers neither)."""

    log_name = "log"

    class Meta:
        abstract = True

    def save(self, *args: object, **kwargs: object) -> None:
        if not self._state.adding:
            raise PermissionError(f"The {self.log_name} is append-only.")
        super().save(*args, **kwargs)  # type: ignore[arg-type]

    def delete(self, *args: object, **kwargs: object) -> tuple[int, dict[str, int]]:
        raise PermissionError(f"The {self.log_name} is append-only.")


class SecurityEvent(AppendOnlyModel):
    """One security event. `username` keeps the name the event was about even after the user is
    deleted (or when the name did not exist: failed sign-ins); `actor` is who did it, when that is
    someone else (an admin changing a user's permissions)."""

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    kind = models.CharField(max_length=24, choices=SecurityEventKind.choices, db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    username = models.CharField(max_length=150, blank=True)
    actor = models.CharField(max_length=150, blank=True)
    address = models.GenericIPAddressField(null=True, blank=True)
    detail = models.CharField(max_length=500, blank=True)

    log_name = "security event log"

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.kind} {self.username}"
