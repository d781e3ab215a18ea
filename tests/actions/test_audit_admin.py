"""The action log in the admin: admins read it; nobody adds, changes or deletes a row there."""

from __future__ import annotations

from ai_chat.models import ActionKind, ActionLog, ActionOutcome


def test_admins_can_read_the_action_log_but_not_change_it(admin_client, alice):
    row = ActionLog.objects.create(
        user=alice, kind=ActionKind.QUERY, outcome=ActionOutcome.REFUSED, error="not allowed"
    )
    listing = admin_client.get("/admin/ai_chat/actionlog/")
    assert listing.status_code == 200
    assert "not allowed" in listing.content.decode()
    assert admin_client.get("/admin/ai_chat/actionlog/add/").status_code == 403
    detail = admin_client.get(f"/admin/ai_chat/actionlog/{row.pk}/change/")
    assert detail.status_code == 200
    assert b'name="_save"' not in detail.content
    assert admin_client.post(f"/admin/ai_chat/actionlog/{row.pk}/delete/").status_code == 403
    assert ActionLog.objects.filter(pk=row.pk).exists()
