"""GET /ai-chat/c/<id>/export/?format=md|json: the owner's conversation as a download."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from ai_chat.models import Conversation, Message, Role


@pytest.fixture
def conversation(alice):
    conversation = Conversation.objects.create(
        owner=alice, title="Plan for Monday", system_prompt="Be brief."
    )
    rows = [
        (Role.USER, "What is on Monday?", ""),
        (Role.ASSISTANT, "A **meeting** at 10.\n\n```py\nprint(1)\n```", "gpt-4o-mini"),
        (Role.TOOL, '{"secret": "tool output"}', ""),
        (Role.USER, "And Tuesday?", ""),
        (Role.ASSISTANT, "Nothing yet.", "gpt-4o-mini"),
    ]
    for role, content, model in rows:
        Message.objects.create(conversation=conversation, role=role, content=content, model=model)
    return conversation


def url(conversation, kind=None):
    base = f"/ai-chat/c/{conversation.pk}/export/"
    return f"{base}?format={kind}" if kind else base


def test_it_exports_markdown_in_order(alice_client, conversation):
    response = alice_client.get(url(conversation, "md"))
    assert response.status_code == 200
    assert response["Content-Type"] == "text/markdown; charset=utf-8"
    assert response["Content-Disposition"] == (
        f'attachment; filename="plan-for-monday-{conversation.pk}.md"'
    )
    text = response.content.decode()
    assert text.startswith("# Plan for Monday\n")
    assert "> Be brief." in text
    order = [
        text.index(s)
        for s in ("What is on Monday?", "A **meeting**", "And Tuesday?", "Nothing yet.")
    ]
    assert order == sorted(order)
    assert "```py\nprint(1)\n```" in text
    assert "## Assistant (gpt-4o-mini)" in text
    assert "tool output" not in text  # results sent to the model are not the conversation


def test_it_exports_json(alice_client, conversation):
    response = alice_client.get(url(conversation, "json"))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json; charset=utf-8"
    assert response["Content-Disposition"].endswith(f'-{conversation.pk}.json"')
    data = json.loads(response.content)
    assert data["title"] == "Plan for Monday"
    assert [m["role"] for m in data["messages"]] == ["user", "assistant", "user", "assistant"]
    assert data["messages"][1]["content"].startswith("A **meeting**")
    assert data["messages"][1]["model"] == "gpt-4o-mini"


def test_markdown_is_the_default(alice_client, conversation):
    assert alice_client.get(url(conversation))["Content-Type"].startswith("text/markdown")


def test_an_unknown_format_is_a_400(alice_client, conversation):
    response = alice_client.get(url(conversation, "pdf"))
    assert response.status_code == 400
    assert "md or json" in response.json()["error"]


def test_it_checks_ownership(bob_client, conversation):
    assert bob_client.get(url(conversation, "md")).status_code == 404
    assert bob_client.get(url(conversation, "json")).status_code == 404
    assert Client().get(url(conversation, "md")).status_code == 302  # sign in first


@pytest.mark.parametrize(
    "title,expected",
    [
        ('../../etc/passwd\r\nX-Evil: 1"', "etcpasswd-x-evil-1"),
        ("برنامه‌ی دوشنبه", "برنامه-ی-دوشنبه"),
        ("", "conversation"),
        ("???", "conversation"),
    ],
)
def test_the_filename_is_safe(alice_client, alice, title, expected):
    conversation = Conversation.objects.create(owner=alice, title=title)
    disposition = alice_client.get(url(conversation, "md"))["Content-Disposition"]
    assert "/" not in disposition.split("filename", 1)[1].replace("''", "")
    assert "\r" not in disposition and "\n" not in disposition
    from urllib.parse import unquote

    assert f"{expected}-{conversation.pk}.md" in unquote(disposition)


def test_the_chat_header_links_the_export(alice_client, conversation):
    html = alice_client.get(f"/ai-chat/c/{conversation.pk}/").content.decode()
    assert f'action="/ai-chat/c/{conversation.pk}/export/"' in html
    assert 'name="format" value="md"' in html and 'name="format" value="json"' in html


def test_it_exports_only_the_active_branch(alice, alice_client):
    from ai_chat.models import Conversation, Message, Role

    conversation = Conversation.objects.create(owner=alice, title="branches")
    Message.objects.create(conversation=conversation, role=Role.USER, content="kept question")
    Message.objects.create(
        conversation=conversation,
        role=Role.ASSISTANT,
        content="an earlier version",
        active=False,
        selected=False,
    )
    Message.objects.create(conversation=conversation, role=Role.ASSISTANT, content="kept answer")
    response = alice_client.get(f"/ai-chat/c/{conversation.pk}/export/?format=md")
    body = b"".join(response.streaming_content) if response.streaming else response.content
    text = body.decode()
    assert "kept question" in text and "kept answer" in text
    assert "an earlier version" not in text
