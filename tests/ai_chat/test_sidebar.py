"""#12 sidebar: pin (pinned first), rename and delete from each conversation's menu, and a
search that treats the Persian half-space (ZWNJ), a plain space and no separator alike."""

from __future__ import annotations

import datetime as dt

import pytest
from django.test import Client
from django.utils import timezone

from ai_chat.models import Conversation, Message, Role
from core.templatetags.panel import with_id


def conversation(owner, title, minutes_ago=0, text=""):
    c = Conversation.objects.create(
        owner=owner, title=title, updated_at=timezone.now() - dt.timedelta(minutes=minutes_ago)
    )
    if text:
        m = Message(conversation=c, role=Role.USER)
        m.set_content(text)
        m.save()
    return c


def listed(client, **params) -> list[str]:
    response = client.get("/ai-chat/", params)
    return [c.title for c in response.context["conversations"]]


def test_a_pinned_conversation_comes_first_until_unpinned(alice_client, alice):
    old = conversation(alice, "Old but important", minutes_ago=600)
    conversation(alice, "Newer", minutes_ago=5)
    assert listed(alice_client) == ["Newer", "Old but important"]
    response = alice_client.post(f"/ai-chat/c/{old.id}/pin/", {"pinned": "1", "next": "/ai-chat/"})
    assert response.status_code == 302
    assert response["Location"] == "/ai-chat/"
    old.refresh_from_db()
    assert old.pinned
    assert listed(alice_client) == ["Old but important", "Newer"]
    html = alice_client.get("/ai-chat/").content.decode()
    assert f'data-conversation-id="{old.id}" class="pinned"' in html
    alice_client.post(f"/ai-chat/c/{old.id}/pin/", {"pinned": "0"})
    assert listed(alice_client) == ["Newer", "Old but important"]


def test_pinning_is_the_owners_post_only(alice_client, bob_client, alice):
    c = conversation(alice, "Mine")
    assert bob_client.post(f"/ai-chat/c/{c.id}/pin/", {"pinned": "1"}).status_code == 404
    assert alice_client.get(f"/ai-chat/c/{c.id}/pin/").status_code == 405
    csrf = Client(enforce_csrf_checks=True)
    csrf.force_login(alice)
    assert csrf.post(f"/ai-chat/c/{c.id}/pin/", {"pinned": "1"}).status_code == 403
    c.refresh_from_db()
    assert not c.pinned


def test_pinning_never_redirects_off_the_site(alice_client, alice):
    c = conversation(alice, "Mine")
    for target in ("https://evil.example/", "//evil.example/x", "javascript:alert(1)"):
        response = alice_client.post(f"/ai-chat/c/{c.id}/pin/", {"pinned": "1", "next": target})
        assert response["Location"] == f"/ai-chat/c/{c.id}/"


def test_the_sidebar_has_one_menu_for_every_conversation(alice_client, alice):
    """Pin, rename and delete are rendered once, for conversation 0 (chat.js moves the menu to
    the row opened and puts the row's id in the addresses); each row carries what it needs."""
    a, b = conversation(alice, "First"), conversation(alice, "")
    alice_client.post(f"/ai-chat/c/{a.id}/pin/", {"pinned": "1"})
    response = alice_client.get("/ai-chat/?q=")
    html = response.content.decode()
    assert [t.name for t in response.templates].count("ai_chat/sidebar_menu.html") == 1
    for action in ("pin", "rename", "delete"):
        assert html.count(f'data-action="{action}"') == 1, action
        assert f'action="/ai-chat/c/0/{action}/"' in html, action
    delete = html.split('action="/ai-chat/c/0/delete/"')[1].split(">")[0]
    assert "data-confirm=" in delete  # delete asks first
    assert f'<li data-conversation-id="{a.id}" class="pinned"><a href="/ai-chat/c/{a.id}/"' in html
    assert f'<li data-conversation-id="{b.id}" data-untitled>' in html  # its title field is empty
    assert "Options for “{title}”" in html  # the ⋯ label, completed by chat.js


def test_a_rows_address_is_the_one_pattern_with_its_id():
    assert with_id("/ai-chat/c/0/", 12) == "/ai-chat/c/12/"
    assert with_id("/0/ai-chat/c/0/", 7) == "/0/ai-chat/c/7/"  # the last /0/, not a prefix's
    assert with_id("/ai-chat/c/0/rename/", 7) == "/ai-chat/c/7/rename/"


def test_a_conversation_in_the_sidebar_costs_a_line_not_a_menu(alice_client, alice):
    """The page grows by about one list item per conversation (~1.3 kB with a menu per row)."""
    title = "A title of ordinary length"
    for i in range(10):
        conversation(alice, title, minutes_ago=i)
    small = len(alice_client.get("/ai-chat/").content)
    for i in range(50):
        conversation(alice, title, minutes_ago=100 + i)
    large = len(alice_client.get("/ai-chat/").content)
    per_row = (large - small) / 50
    assert per_row < 150, per_row


def test_renaming_and_deleting_from_the_sidebar_work_on_any_conversation(alice_client, alice):
    open_one, other = conversation(alice, "Open"), conversation(alice, "Other")
    alice_client.post(f"/ai-chat/c/{other.id}/rename/", {"title": "Renamed from the list"})
    other.refresh_from_db()
    assert other.title == "Renamed from the list"
    alice_client.post(f"/ai-chat/c/{other.id}/delete/")
    assert list(Conversation.objects.values_list("title", flat=True)) == [open_one.title]


@pytest.mark.parametrize(
    "stored,query",
    [
        ("می‌خواهم بروم", "می خواهم"),  # half-space stored, space searched
        ("می خواهم بروم", "می‌خواهم"),  # space stored, half-space searched
        ("می‌خواهم بروم", "میخواهم"),  # no separator at all
        ("نامه‌ی اداری", "نامه ی"),
    ],
)
def test_search_treats_the_half_space_and_a_space_alike(alice_client, alice, stored, query):
    conversation(alice, "in a message", text=f"امروز {stored}")
    conversation(alice, f"عنوان {stored}")
    conversation(alice, "unrelated", text="چیز دیگری")
    assert sorted(listed(alice_client, q=query)) == sorted(["in a message", f"عنوان {stored}"])


def test_search_still_finds_nothing_for_other_words(alice_client, alice):
    conversation(alice, "A", text="می‌خواهم")
    assert listed(alice_client, q="نمی‌دانم") == []
