"""Versions instead of overwrites: regenerate and edit keep the other branch, only the active
branch is shown and sent to the model, and the page switches between versions."""

from __future__ import annotations

import re

import pytest
from asgiref.sync import sync_to_async

from ai_chat.models import Message
from tests.ai_chat.helpers import client_for, stream
from tests.ai_chat.test_stream import key_for
from tests.conftest import signed_in

pytestmark = pytest.mark.django_db(transaction=True)


def sent_contents(fake) -> list[tuple[str, str]]:
    return [
        (m["role"], m["content"])
        for m in fake.requests[-1].body["messages"]
        if m["role"] != "system"
    ]


async def active_texts(conversation: int) -> list[str]:
    return [
        m.content
        async for m in Message.objects.filter(conversation_id=conversation, active=True).order_by(
            "id"
        )
    ]


async def three_turns(alice, fake):
    key = await key_for(alice, fake)
    client = await client_for(alice)
    _, events = await stream(client, message="one", key=key.pk)
    conversation = events[0][1]["conversation"]
    _, events = await stream(client, message="two", conversation=conversation)
    two = events[0][1]["user_message"]
    _, events = await stream(client, message="three", conversation=conversation)
    return client, conversation, two


async def test_edit_makes_a_new_version_and_goes_on_from_it_keeping_the_other_branch(alice, fake):
    client, conversation, two = await three_turns(alice, fake)
    _, events = await stream(client, message="two, edited", edit=two, conversation=conversation)
    assert events[-1][0] == "done"
    # Only the active branch went to the model: the turns before the edited one, and it.
    assert sent_contents(fake) == [
        ("user", "one"),
        ("assistant", "Hello! You said: one"),
        ("user", "two, edited"),
    ]
    assert await active_texts(conversation) == [
        "one",
        "Hello! You said: one",
        "two, edited",
        "Hello! You said: two, edited",
    ]
    old, new = (
        Message.objects.filter(pk=two),
        Message.objects.filter(pk=events[0][1]["user_message"]),
    )
    old, new = await old.aget(), await new.aget()
    assert (old.version, old.versions, old.active) == (1, 2, False)
    assert (new.version, new.versions, new.active, new.parent_id) == (2, 2, True, old.parent_id)
    # The other branch is intact: all of its rows are still there.
    assert await Message.objects.filter(conversation_id=conversation).acount() == 8

    # Switch back to version 1: the old branch, as it was, is active again.
    answer = await client.post(
        f"/ai-chat/messages/{new.pk}/version/",
        {"version": "1"},
        headers={"Accept": "application/json"},
    )
    assert answer.json() == {"ok": True}
    assert await active_texts(conversation) == [
        "one",
        "Hello! You said: one",
        "two",
        "Hello! You said: two",
        "three",
        "Hello! You said: three",
    ]
    # And a follow-up now goes on from that branch.
    _, events = await stream(client, message="four", conversation=conversation)
    assert sent_contents(fake)[-3:] == [
        ("user", "three"),
        ("assistant", "Hello! You said: three"),
        ("user", "four"),
    ]


async def test_regenerate_then_switch_between_the_replies(alice, fake):
    key = await key_for(alice, fake)
    client = await client_for(alice)
    _, events = await stream(client, message="[[echo-history]] hi", key=key.pk)
    conversation, first = events[0][1]["conversation"], events[-1][1]["message"]
    _, events = await stream(client, regenerate="1", conversation=conversation)
    second = events[-1][1]["message"]
    _, events = await stream(client, regenerate="1", conversation=conversation)
    third = events[-1][1]["message"]
    rows = {m.pk: m async for m in Message.objects.filter(pk__in=[first, second, third])}
    assert [
        (rows[p].version, rows[p].versions, rows[p].active) for p in (first, second, third)
    ] == [
        (1, 3, False),
        (2, 3, False),
        (3, 3, True),
    ]
    answer = await client.post(f"/ai-chat/messages/{third}/version/", {"version": "2"})
    assert answer.status_code == 302
    assert answer["Location"] == f"/ai-chat/c/{conversation}/"
    actives = [
        m.pk async for m in Message.objects.filter(conversation_id=conversation, active=True)
    ]
    assert actives[-1] == second and len(actives) == 2


async def test_switching_checks_ownership_and_the_version(alice, bob, fake):
    key = await key_for(alice, fake)
    client = await client_for(alice)
    _, events = await stream(client, message="hi", key=key.pk)
    reply = events[-1][1]["message"]
    bob_client = await client_for(bob)
    answer = await bob_client.post(f"/ai-chat/messages/{reply}/version/", {"version": "1"})
    assert answer.status_code == 404
    assert (
        await client.post(f"/ai-chat/messages/{reply}/version/", {"version": "2"})
    ).status_code == 404
    assert (
        await client.post(f"/ai-chat/messages/{reply}/version/", {"version": "x"})
    ).status_code == 400
    assert (
        await client.post(f"/ai-chat/messages/{reply}/version/", {"version": "1"})
    ).status_code == 302


async def test_an_edit_must_name_a_user_message_of_the_active_branch(alice, bob, fake):
    client, conversation, two = await three_turns(alice, fake)
    reply_of_two = await Message.objects.filter(parent_id=two).afirst()
    for target in (reply_of_two.pk, 999999):
        response, _ = await stream(client, message="x", edit=target, conversation=conversation)
        assert response.status_code == 404
        assert response.json() == {"error": "No such message to edit."}
    response, _ = await stream(client, message="x", edit=two)
    assert response.status_code == 400
    bob_client = await client_for(bob)
    await key_for(bob, fake, label="bob key")
    response, _ = await stream(bob_client, message="x", edit=two, conversation=conversation)
    assert response.status_code == 404
    assert not await Message.objects.filter(content="x").aexists()


async def test_the_page_shows_the_active_branch_with_a_version_switcher(alice, fake):
    client, conversation, two = await three_turns(alice, fake)
    _, events = await stream(client, message="two, edited", edit=two, conversation=conversation)
    page = (
        await sync_to_async(lambda: signed_in(alice).get(f"/ai-chat/c/{conversation}/"))()
    ).content.decode()
    assert "two, edited" in page
    assert "Hello! You said: three" not in page  # the other branch is not shown
    assert 'data-action="prev-version"' in page and 'data-action="next-version"' in page
    assert re.search(r"data-versions>\s*2 / 2<", page)
