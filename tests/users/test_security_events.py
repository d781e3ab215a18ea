"""Security events go to an append-only log that admins can read but not change."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.contrib.auth.models import Group, Permission
from django.test import Client

from core.models import SecurityEvent, SecurityEventKind
from tests.conftest import PASSWORD, make_key

PROXY = {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_REAL_IP": "198.51.100.7"}


def changes():
    """The events other than the test clients' own sign-ins (force_login records one)."""
    return SecurityEvent.objects.exclude(kind=SecurityEventKind.LOGIN).order_by("id")


def kinds() -> list[str]:
    return list(changes().values_list("kind", flat=True))


def test_sign_ins_are_recorded_with_the_real_address(alice):
    client = Client()
    client.post("/login/", {"username": "alice", "password": "wrong"}, **PROXY)
    client.post("/login/", {"username": "alice", "password": PASSWORD}, **PROXY)
    client.post("/logout/", **PROXY)
    failed, success, out = SecurityEvent.objects.order_by("id")
    assert (failed.kind, failed.username, failed.address) == (
        SecurityEventKind.LOGIN_FAILED,
        "alice",
        "198.51.100.7",
    )
    assert failed.user is None
    assert (success.kind, success.user, success.address) == (
        SecurityEventKind.LOGIN,
        alice,
        "198.51.100.7",
    )
    assert out.kind == SecurityEventKind.LOGOUT
    # The password is nowhere in the log.
    for event in SecurityEvent.objects.all():
        assert "wrong" not in event.detail and PASSWORD not in event.detail


def test_a_lockout_is_recorded(alice):
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post("/login/", {"username": "nobody", "password": "x"}, REMOTE_ADDR="10.9.8.7")
    locked = SecurityEvent.objects.get(kind=SecurityEventKind.LOCKED_OUT)
    assert (locked.username, locked.address) == ("nobody", "10.9.8.7")


def test_key_changes_are_recorded_with_who_did_them(alice_client, alice):
    key = make_key(alice, label="Team key")
    alice_client.post(f"/api-manager/keys/{key.pk}/toggle/")
    key.refresh_from_db()
    key.shared = True
    key.save(update_fields=["shared"])
    key.record_success()  # bookkeeping, not an event
    alice_client.post(f"/api-manager/keys/{key.pk}/delete/")
    events = list(changes())
    assert [e.kind for e in events] == [
        SecurityEventKind.KEY_ADDED,
        SecurityEventKind.KEY_EDITED,
        SecurityEventKind.KEY_SHARED,
        SecurityEventKind.KEY_DELETED,
    ]
    assert all(e.username == "alice" for e in events)
    assert "disabled" in events[1].detail
    assert events[1].actor == events[3].actor == "alice"  # through a page: the signed-in user
    assert "Team key" in events[3].detail
    # The secret never appears.
    from tests.conftest import OPENAI_SECRET

    assert not any(OPENAI_SECRET in e.detail or key.last4 in e.detail for e in events)


def test_a_key_added_through_the_page_is_recorded(alice_client, fake):
    # Saving tests the key live: against the fake provider, never the internet.
    response = alice_client.post(
        "/api-manager/keys/add/",
        {
            "provider": "openai",
            "label": "Mine",
            "api_key": "sk-test-abcdefghijklmnop",
            "base_url": fake.openai_url,
        },
    )
    assert response.status_code == 302
    event = changes().get()
    assert event.kind == SecurityEventKind.KEY_ADDED
    assert event.actor == "alice"


def test_permission_and_group_changes_are_recorded(alice, admin_client):
    permission = Permission.objects.get(codename="run_query")
    alice.user_permissions.add(permission)
    group = Group.objects.create(name="operators")
    group.permissions.add(permission)
    alice.groups.add(group)
    alice.user_permissions.remove(permission)
    assert kinds() == [
        SecurityEventKind.PERMISSIONS_CHANGED,
        SecurityEventKind.PERMISSIONS_CHANGED,
        SecurityEventKind.GROUPS_CHANGED,
        SecurityEventKind.PERMISSIONS_CHANGED,
    ]
    details = list(changes().values_list("detail", flat=True))
    assert details == [
        "added: run_query",
        "group operators: added: run_query",
        "added: operators",
        "removed: run_query",
    ]


def test_changes_made_from_the_permission_side_are_recorded_too(alice):
    """permission.user_set / permission.group_set / group.user_set change the same relations:
    recorded as what changed, in one event each."""
    permission = Permission.objects.get(codename="run_query")
    group = Group.objects.create(name="operators")
    permission.user_set.add(alice)
    permission.group_set.add(group)
    group.user_set.add(alice)
    permission.group_set.remove(group)
    assert list(changes().values_list("kind", "detail")) == [
        (SecurityEventKind.PERMISSIONS_CHANGED, "run_query: users add"),
        (SecurityEventKind.PERMISSIONS_CHANGED, "run_query: groups add"),
        (SecurityEventKind.GROUPS_CHANGED, "group operators: members add"),
        (SecurityEventKind.PERMISSIONS_CHANGED, "run_query: groups remove"),
    ]


def test_an_admin_making_someone_staff_is_recorded(alice, admin_client):
    alice.is_staff = True
    alice.save()
    event = changes().get()
    assert (event.kind, event.username, event.detail) == (
        SecurityEventKind.ACCOUNT_CHANGED,
        "alice",
        "is_staff=True",
    )


def test_the_log_is_append_only(alice):
    event = SecurityEvent.objects.create(kind=SecurityEventKind.LOGIN, username="alice")
    event.detail = "changed"
    with pytest.raises(PermissionError):
        event.save()
    with pytest.raises(PermissionError):
        event.delete()


def test_admins_can_read_but_not_change_it(admin_client, alice):
    Client().post("/login/", {"username": "alice", "password": "wrong"}, **PROXY)
    event = changes().get()
    listing = admin_client.get("/admin/core/securityevent/")
    assert listing.status_code == 200
    assert "198.51.100.7" in listing.content.decode()
    assert admin_client.get("/admin/core/securityevent/add/").status_code == 403
    detail = admin_client.get(f"/admin/core/securityevent/{event.pk}/change/")
    assert detail.status_code == 200
    assert b'name="_save"' not in detail.content
    assert admin_client.post(f"/admin/core/securityevent/{event.pk}/delete/").status_code == 403


def test_ordinary_users_cannot_read_it(alice_client):
    assert alice_client.get("/admin/core/securityevent/").status_code == 302
