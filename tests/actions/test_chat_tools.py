"""Tool calls from the model become approval cards; nothing runs before the user approves."""

from __future__ import annotations

import json

import pytest
from asgiref.sync import sync_to_async

from ai_chat.models import ActionLog, Conversation, FileChange, Message, Role
from tests.ai_chat.helpers import client_for, stream
from tests.conftest import make_key, signed_in

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "readonly"])
PROVIDERS = ["openai", "anthropic"]


async def decide(user, url, decision):
    def post():
        return signed_in(user).post(url, {"decision": decision})

    return await sync_to_async(post)()


async def propose(user, fake, provider, directive):
    key = await sync_to_async(make_key)(user, fake, provider=provider)
    client = await client_for(user)
    _, events = await stream(client, message=f"{directive} please", key=key.pk)
    return client, events


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_query_tool_call_becomes_a_card_and_runs_only_when_approved(
    operator, fake, provider, workspace
):
    client, events = await propose(operator, fake, provider, "[[tool:query]]")
    offered = fake.requests[-1].body["tools"]
    assert {t.get("name") or t["function"]["name"] for t in offered} == {
        "run_query",
        "append_to_file",
    }
    done = events[-1]
    assert done[0] == "done"
    cards = done[1]["tool_calls"]
    assert len(cards) == 1
    assert cards[0]["name"] == "run_query"
    assert cards[0]["state"] == "pending"
    assert "Message.objects.filter" in cards[0]["arguments"]["code"]
    assert 'data-tool-decision="approve"' in done[1]["cards_html"]
    assert not await ActionLog.objects.aexists()  # nothing ran

    conversation_id, message_id = events[0][1]["conversation"], done[1]["message"]
    url = f"/ai-chat/c/{conversation_id}/m/{message_id}/actions/{cards[0]['id']}/"
    response = await decide(operator, url, "approve")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["card"]["state"] == "done"
    assert body["card"]["result"]["columns"] == ["conversation__title", "n"]
    assert body["continue"] is True
    assert "<table" in body["html"]
    log = await ActionLog.objects.aget()
    assert (log.kind, log.outcome) == ("query", "ok")

    # The browser continues the turn: the result goes back to the model, which answers.
    _, events = await stream(client, conversation=conversation_id, **{"continue": "1"})
    assert events[-1][0] == "done"
    text = "".join(d["text"] for n, d in events if n == "delta")
    assert text.startswith("The tool returned:")
    assert "conversation__title" in text
    sent = fake.requests[-1].body["messages"]
    if provider == "openai":
        assert sent[-2]["tool_calls"][0]["function"]["name"] == "run_query"
        assert sent[-1]["role"] == "tool"
    else:
        assert sent[-2]["content"][0]["type"] == "tool_use"
        assert sent[-1]["content"][0]["type"] == "tool_result"


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_an_append_tool_call_shows_a_diff_applies_on_approval_and_can_be_undone(
    operator, fake, provider, workspace
):
    _, events = await propose(operator, fake, provider, "[[tool:append]]")
    card = events[-1][1]["tool_calls"][0]
    assert card["name"] == "append_to_file"
    assert "+def added():" in card["diff"]
    assert (workspace / "notes.md").read_text() == "# Notes\n"  # the preview wrote nothing
    conversation_id, message_id = events[0][1]["conversation"], events[-1][1]["message"]
    url = f"/ai-chat/c/{conversation_id}/m/{message_id}/actions/{card['id']}/"
    body = (await decide(operator, url, "approve")).json()
    assert body["card"]["state"] == "applied"
    assert (workspace / "notes.md").read_text() == "# Notes\ndef added():\n    return 42\n"
    undo = await sync_to_async(
        lambda: signed_in(operator).post(
            f"/api/actions/changes/{body['card']['change']}/undo/",
            "{}",
            content_type="application/json",
        )
    )()
    assert undo.status_code == 200
    assert (workspace / "notes.md").read_text() == "# Notes\n"


async def test_rejecting_runs_nothing_and_tells_the_model(operator, fake, workspace):
    client, events = await propose(operator, fake, "openai", "[[tool:append]]")
    card = events[-1][1]["tool_calls"][0]
    conversation_id, message_id = events[0][1]["conversation"], events[-1][1]["message"]
    url = f"/ai-chat/c/{conversation_id}/m/{message_id}/actions/{card['id']}/"
    body = (await decide(operator, url, "reject")).json()
    assert body["card"]["state"] == "rejected"
    assert (workspace / "notes.md").read_text() == "# Notes\n"
    assert (await FileChange.objects.aget()).status == "rejected"
    tool_message = await Message.objects.aget(role=Role.TOOL)
    assert "rejected" in json.loads(tool_message.content)["error"]
    # A decided card cannot be decided again.
    again = await decide(operator, url, "approve")
    assert again.status_code == 409
    assert (workspace / "notes.md").read_text() == "# Notes\n"


async def test_a_user_without_the_permissions_is_never_offered_the_tools(alice, fake, workspace):
    key = await sync_to_async(make_key)(alice, fake)
    client = await client_for(alice)
    _, events = await stream(client, message="[[tool:query]] hi", key=key.pk)
    assert "tools" not in fake.requests[-1].body
    assert events[-1][0] == "done"
    assert events[-1][1]["tool_calls"] == []


async def test_bob_cannot_decide_on_alices_card(operator, bob, fake, workspace):
    _, events = await propose(operator, fake, "openai", "[[tool:query]]")
    card = events[-1][1]["tool_calls"][0]
    url = f"/ai-chat/c/{events[0][1]['conversation']}/m/{events[-1][1]['message']}/actions/{card['id']}/"
    response = await decide(bob, url, "approve")
    assert response.status_code == 404
    # #8.6: the attempt on a card that is not his is audited (as unknown), and nothing ran.
    log = await ActionLog.objects.aget()
    assert (log.kind, log.outcome, log.user_id) == ("decide", "refused", bob.pk)
    reply = await Message.objects.aget(pk=events[-1][1]["message"])
    assert reply.tool_calls[0]["state"] == "pending"


async def test_a_new_message_after_an_undecided_call_still_makes_a_valid_history(
    operator, fake, workspace
):
    client, events = await propose(operator, fake, "openai", "[[tool:query]]")
    conversation_id = events[0][1]["conversation"]
    _, events = await stream(client, message="never mind", conversation=conversation_id)
    assert events[-1][0] == "done"
    sent = fake.requests[-1].body["messages"]
    assert sent[-2]["role"] == "tool"
    assert "did not approve" in sent[-2]["content"]
    assert await Conversation.objects.acount() == 1
