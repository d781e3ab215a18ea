"""Security events about accounts: sign-ins (succeeded, failed, locked out), sign-outs, password
changes, permission, group and account-flag changes. Written to core.models.SecurityEvent."""

from __future__ import annotations

from typing import Any

from axes.signals import user_locked_out
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db.models.signals import m2m_changed, post_save, pre_save
from django.dispatch import receiver
from django.http import HttpRequest

from core import audit
from core.models import SecurityEventKind

User = get_user_model()

# Account flags whose change is a security event.
FLAGS = ("is_active", "is_staff", "is_superuser")


@receiver(user_logged_in, dispatch_uid="users.audit.logged_in")
def _logged_in(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    audit.record(SecurityEventKind.LOGIN, user=user, request=request)


@receiver(user_logged_out, dispatch_uid="users.audit.logged_out")
def _logged_out(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    if user is not None:
        audit.record(SecurityEventKind.LOGOUT, user=user, request=request)


@receiver(user_login_failed, dispatch_uid="users.audit.login_failed")
def _login_failed(
    sender: Any, credentials: dict, request: HttpRequest | None = None, **kwargs: Any
) -> None:
    # `credentials` has the password already replaced by Django; only the name is kept.
    audit.record(
        SecurityEventKind.LOGIN_FAILED,
        username=str(credentials.get("username", "")),
        request=request,
    )


@receiver(user_locked_out, dispatch_uid="users.audit.locked_out")
def _locked_out(
    sender: Any, request: HttpRequest | None, username: str | None = None, **kwargs: Any
) -> None:
    audit.record(SecurityEventKind.LOCKED_OUT, username=username or "", request=request)


@receiver(pre_save, sender=User, dispatch_uid="users.audit.remember_before")
def _remember_before(sender: Any, instance: Any, update_fields: Any = None, **kwargs: Any) -> None:
    """Keep the stored password hash and flags, to tell afterwards what changed. Sign-in saves
    only `last_login`: no extra query then."""
    instance._audit_before = None
    if instance.pk is None or (update_fields is not None and set(update_fields) == {"last_login"}):
        return
    instance._audit_before = User.objects.filter(pk=instance.pk).values("password", *FLAGS).first()


@receiver(post_save, sender=User, dispatch_uid="users.audit.changed")
def _account_changed(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
    before = getattr(instance, "_audit_before", None)
    instance._audit_before = None
    if created or not before:
        return
    if before["password"] != instance.password:
        audit.record(SecurityEventKind.PASSWORD_CHANGED, user=instance)
    changed = [
        f"{flag}={getattr(instance, flag)}"
        for flag in FLAGS
        if before[flag] != getattr(instance, flag)
    ]
    if changed:
        audit.record(SecurityEventKind.ACCOUNT_CHANGED, user=instance, detail=", ".join(changed))


def _describe(action: str, model: Any, pk_set: set | None) -> str:
    if action == "post_clear":
        return "cleared"
    names: list[str] = []
    if pk_set:
        field = "codename" if model._meta.model_name == "permission" else "name"
        names = sorted(
            str(n) for n in model.objects.filter(pk__in=pk_set).values_list(field, flat=True)
        )
    verb = "added" if action == "post_add" else "removed"
    return f"{verb}: {', '.join(names)}"


def _unchanged(user: Any, change: str) -> tuple[Any, str]:
    return user, change


# The many-to-many relations whose changes are security events, by their table: the event's
# kind; the event's user and detail for a change made from the owning side (user.groups.add,
# group.permissions.add: `change` says what was added or removed); and what a change made from
# the other side says (permission.user_set.add(user, ...), group.user_set.add(...),
# permission.group_set.add(...): one event per user or group would need the set).
M2M_EVENTS = {
    User.user_permissions.through: (
        SecurityEventKind.PERMISSIONS_CHANGED,
        _unchanged,
        lambda permission: f"{permission.codename}: users",
    ),
    User.groups.through: (
        SecurityEventKind.GROUPS_CHANGED,
        _unchanged,
        lambda group: f"group {group.name}: members",
    ),
    Group.permissions.through: (
        SecurityEventKind.PERMISSIONS_CHANGED,
        lambda group, change: (None, f"group {group.name}: {change}"),
        lambda permission: f"{permission.codename}: groups",
    ),
}


@receiver(m2m_changed, sender=User.user_permissions.through, dispatch_uid="users.audit.perms")
@receiver(m2m_changed, sender=User.groups.through, dispatch_uid="users.audit.groups")
@receiver(m2m_changed, sender=Group.permissions.through, dispatch_uid="users.audit.group_perms")
def _relations(
    sender: Any,
    instance: Any,
    action: str,
    reverse: bool,
    model: Any,
    pk_set: set | None,
    **kwargs: Any,
) -> None:
    if action not in {"post_add", "post_remove", "post_clear"}:
        return
    kind, owning_side, from_the_other_side = M2M_EVENTS[sender]
    if reverse:
        audit.record(kind, detail=f"{from_the_other_side(instance)} {action[5:]}")
        return
    user, detail = owning_side(instance, _describe(action, model, pk_set))
    audit.record(kind, user=user, detail=detail)
