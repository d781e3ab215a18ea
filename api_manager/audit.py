"""Security events about provider keys: added, edited, shared (or unshared), deleted.

A key's own bookkeeping (last used, last error) is not an event."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from api_manager.models import ProviderKey
from core import audit
from core.models import SecurityEventKind

BOOKKEEPING = {"last_used_at", "last_error_at", "last_error"}


def _detail(key: ProviderKey, extra: str = "") -> str:
    text = f"key {key.pk} “{key.label}” ({key.provider})"
    return f"{text}: {extra}" if extra else text


@receiver(post_save, sender=ProviderKey, dispatch_uid="api_manager.audit.saved")
def _key_saved(
    sender: Any, instance: ProviderKey, created: bool, update_fields: Any = None, **kwargs: Any
) -> None:
    if created:
        audit.record(SecurityEventKind.KEY_ADDED, user=instance.owner, detail=_detail(instance))
        return
    fields = set(update_fields) if update_fields is not None else None
    if fields is not None and fields <= BOOKKEEPING:
        return
    if fields is not None and fields == {"shared"}:
        state = "shared" if instance.shared else "not shared"
        audit.record(
            SecurityEventKind.KEY_SHARED, user=instance.owner, detail=_detail(instance, state)
        )
        return
    changed = ", ".join(sorted(fields - BOOKKEEPING)) if fields is not None else "all fields"
    if fields is not None and fields == {"is_active"}:
        changed = "enabled" if instance.is_active else "disabled"
    if fields is None or "shared" in fields:
        changed += f"; {'shared' if instance.shared else 'not shared'}"
    audit.record(
        SecurityEventKind.KEY_EDITED, user=instance.owner, detail=_detail(instance, changed)
    )


@receiver(post_delete, sender=ProviderKey, dispatch_uid="api_manager.audit.deleted")
def _key_deleted(sender: Any, instance: ProviderKey, **kwargs: Any) -> None:
    # No link to the owner: when the owner's account is being deleted (the keys go with it), a
    # row pointing at it would break the deletion. The name is kept instead.
    owner = (
        get_user_model()
        .objects.filter(pk=instance.owner_id)
        .values_list("username", flat=True)
        .first()
    )
    audit.record(SecurityEventKind.KEY_DELETED, username=owner or "", detail=_detail(instance))
