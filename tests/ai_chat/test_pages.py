"""The chat pages: list, conversation, rename, delete, search, paging, query budgets."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from ai_chat.models import Conversation, Message, Role, Status
from core.text import normalize_for_search
from tests.conftest import make_key


def conversation_with(owner, count: int, title: str = "A chat") -> Conversation:
    conversation = Conversation.objects.create(owner=owner, title=title)
    rows = []
    for i in range(count):
        m = Message(conversation=conversation, role=Role.USER if i % 2 == 0 else Role.ASSISTANT)
        m.set_content(f"message number {i} with **bold**")
        rows.append(m)
    Message.objects.bulk_create(rows)
    return conversation


def test_the_new_chat_page_renders_with_an_empty_state(alice_client, alice):
    html = alice_client.get("/ai-chat/").content.decode()
    assert "There is no active API key yet" in html
    make_key(alice)
    html = alice_client.get("/ai-chat/").content.decode()
    assert "Ask anything" in html
    assert 'id="chat-input"' in html


def test_a_conversation_page_shows_its_messages_rendered_and_directional(alice_client, alice):
    conversation = conversation_with(alice, 4)
    html = alice_client.get(f"/ai-chat/c/{conversation.id}/").content.decode()
    assert "message number 3" in html
    assert "<strong>bold</strong>" in html  # the assistant's Markdown, rendered
    assert 'dir="auto"' in html


def test_a_reply_still_generating_is_labelled_so_not_interrupted(alice_client, alice):
    """Replies are jobs that outlive requests: a `streaming` row is one being generated (a
    crash's leftovers are closed by close_stale_streams), which the page says without script."""
    conversation = conversation_with(alice, 1)
    Message.objects.create(
        conversation=conversation, role=Role.ASSISTANT, status=Status.STREAMING, content="so far"
    )
    html = alice_client.get(f"/ai-chat/c/{conversation.id}/").content.decode()
    assert "Generating…" in html
    assert "Interrupted." not in html


def test_long_conversations_show_the_latest_first_and_page_back(alice_client, alice, settings):
    settings.CHAT_PAGE_MESSAGES = 10
    conversation = conversation_with(alice, 25)
    html = alice_client.get(f"/ai-chat/c/{conversation.id}/").content.decode()
    assert "message number 24" in html
    assert "message number 14 " not in html
    assert "Load earlier messages" in html
    oldest_shown = Message.objects.filter(conversation=conversation).order_by("-id")[9]
    html = alice_client.get(
        f"/ai-chat/c/{conversation.id}/?before={oldest_shown.id}"
    ).content.decode()
    assert "message number 14 " in html
    assert "message number 24" not in html


@pytest.mark.parametrize("method,path", [("get", ""), ("post", "rename/"), ("post", "delete/")])
def test_it_checks_ownership(bob_client, alice, method, path):
    conversation = conversation_with(alice, 2, title="secret plans")
    response = getattr(bob_client, method)(
        f"/ai-chat/c/{conversation.id}/{path}", {"title": "mine now"}
    )
    assert response.status_code == 404
    conversation.refresh_from_db()
    assert conversation.title == "secret plans"


def test_bob_does_not_see_alices_conversations_in_his_list(bob_client, alice):
    conversation_with(alice, 2, title="secret plans")
    assert b"secret plans" not in bob_client.get("/ai-chat/").content
    assert b"secret plans" not in bob_client.get("/ai-chat/?q=secret").content


def test_rename(alice_client, alice):
    conversation = conversation_with(alice, 1)
    response = alice_client.post(
        f"/ai-chat/c/{conversation.id}/rename/", {"title": "  Trip   to Shiraz "}
    )
    assert response.status_code == 302
    conversation.refresh_from_db()
    assert conversation.title == "Trip to Shiraz"


def test_rename_refuses_an_empty_title(alice_client, alice):
    conversation = conversation_with(alice, 1, title="Keep me")
    alice_client.post(f"/ai-chat/c/{conversation.id}/rename/", {"title": "   "})
    conversation.refresh_from_db()
    assert conversation.title == "Keep me"


def test_delete_removes_the_conversation_and_its_messages(alice_client, alice):
    conversation = conversation_with(alice, 3)
    response = alice_client.post(f"/ai-chat/c/{conversation.id}/delete/")
    assert response.status_code == 302
    assert response["Location"] == "/ai-chat/"
    assert not Conversation.objects.exists()
    assert not Message.objects.exists()


def test_delete_asks_for_confirmation_in_the_page(alice_client, alice):
    conversation = conversation_with(alice, 1)
    html = alice_client.get(f"/ai-chat/c/{conversation.id}/").content.decode()
    assert "data-confirm=" in html


@pytest.mark.parametrize(
    "stored,query",
    [
        ("كتاب علي", "کتاب علی"),  # Arabic kaf and yeh, searched with Persian ones
        ("کتاب علی", "كتاب علي"),  # and the reverse
        ("می‌خواهم", "میخواهم"),  # ZWNJ
        ("مُحَمَّد", "محمد"),  # diacritics
        ("Hello World", "hello world"),
        ("عدد ۱۲۳", "عدد 123"),  # Persian digits
    ],
)
def test_search_treats_persian_and_arabic_forms_alike(alice_client, alice, stored, query):
    conversation = conversation_with(alice, 0, title="untitled chat")
    message = Message(conversation=conversation, role=Role.USER)
    message.set_content(f"about {stored} today")
    message.save()
    conversation_with(alice, 1, title="another one")
    html = alice_client.get("/ai-chat/", {"q": query}).content.decode()
    assert "untitled chat" in html
    assert "another one" not in html


def test_search_matches_titles_too(alice_client, alice):
    conversation_with(alice, 0, title="سفر به شيراز")
    html = alice_client.get("/ai-chat/", {"q": "شیراز"}).content.decode()
    assert "شيراز" in html


def test_normalisation_is_idempotent():
    text = "كتابي‌ها مُحَمَّد ۱۲"
    once = normalize_for_search(text)
    assert normalize_for_search(once) == once


@pytest.mark.parametrize("size", [3, 300])
def test_the_chat_page_query_count_is_constant(
    alice_client, alice, django_assert_num_queries, size
):
    make_key(alice)
    conversation = conversation_with(alice, size)
    for i in range(size if size < 10 else 30):
        conversation_with(alice, 1, title=f"other {i}")
    # 1 session, 2 user, 3 conversation, 4 messages page with usage, 5 keys, 6 conversation list
    with django_assert_num_queries(6):
        response = alice_client.get(f"/ai-chat/c/{conversation.id}/")
    assert response.status_code == 200


@pytest.mark.parametrize("size", [3, 300])
def test_the_new_chat_page_query_count_is_constant(
    alice_client, alice, django_assert_num_queries, size
):
    for i in range(size):
        Conversation.objects.create(owner=alice, title=f"c{i}")
    # 1 session, 2 user, 3 keys, 4 conversation list
    with django_assert_num_queries(4):
        alice_client.get("/ai-chat/")


def test_stale_streaming_replies_are_closed_by_the_cleanup_command(alice):
    import datetime as dt

    from django.utils import timezone

    conversation = conversation_with(alice, 1)
    stale = Message.objects.create(
        conversation=conversation,
        role=Role.ASSISTANT,
        status=Status.STREAMING,
        created_at=timezone.now() - dt.timedelta(hours=2),
    )
    fresh = Message.objects.create(
        conversation=conversation, role=Role.ASSISTANT, status=Status.STREAMING
    )
    call_command("close_stale_streams", "--minutes", "30")
    stale.refresh_from_db()
    fresh.refresh_from_db()
    assert stale.status == Status.ERROR
    assert fresh.status == Status.STREAMING


@pytest.mark.parametrize("size", [10, 10_000])
def test_the_chat_page_query_count_is_constant_with_versions(
    alice_client, alice, django_assert_num_queries, size
):
    """Every fourth reply has an earlier version (hidden) and says "2 / 2": the counts are on
    the rows, so versions cost no query."""
    make_key(alice)
    conversation = Conversation.objects.create(owner=alice, title="versions")
    rows = []
    for i in range(size):
        role = Role.USER if i % 2 == 0 else Role.ASSISTANT
        versioned = i % 8 == 1
        if versioned:
            rows.append(
                Message(
                    conversation=conversation,
                    role=role,
                    content=f"old {i}",
                    active=False,
                    selected=False,
                    version=1,
                    versions=2,
                )
            )
        counts = {"version": 2, "versions": 2} if versioned else {}
        rows.append(Message(conversation=conversation, role=role, content=f"m{i}", **counts))
    Message.objects.bulk_create(rows)
    # 1 session, 2 user, 3 conversation, 4 the active branch's page with usage, 5 keys,
    # 6 conversation list
    with django_assert_num_queries(6):
        response = alice_client.get(f"/ai-chat/c/{conversation.id}/")
    page = response.content.decode()
    assert f"m{size - 1}" in page
    assert "old " not in page
    assert page.count('data-action="prev-version"') >= 2
