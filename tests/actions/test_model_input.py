"""What a model sends in a tool call is validated or normalised before it is stored or put in a
URL; the stream always ends with `done` or `error`; a bad stored value never makes a page 500
(issue #8.5). Driven through the real SDKs against the fake provider."""

from __future__ import annotations

import json

import pytest
from asgiref.sync import sync_to_async

from ai_chat.actions.cards import CALL_ID
from ai_chat.models import Conversation, Message, Role
from tests.ai_chat.helpers import client_for, stream
from tests.conftest import make_key, signed_in

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "readonly"])
PROVIDERS = ["openai", "anthropic"]
QUERY = json.dumps({"code": "Message.objects.count()"})


async def page(user, conversation_id):
    return await sync_to_async(lambda: signed_in(user).get(f"/ai-chat/c/{conversation_id}/"))()


CALLS = {
    "an id with a slash": ("call/../../x", "run_query", QUERY, ""),
    "an id longer than the column": ("c" * 300, "run_query", QUERY, ""),
    "an id with spaces and quotes": ('call "1" <b>', "run_query", QUERY, ""),
    "an unknown name": ("call_1", "../../" + "x" * 300, QUERY, "Unknown tool"),
    "arguments that are not JSON": ("call_1", "run_query", '{"code": ', "not a JSON object"),
    "arguments that are a list": ("call_1", "run_query", "[1, 2]", "not a JSON object"),
    "a NUL and a lone surrogate": (
        "call_1",
        "append_to_file",
        '{"path": "a\\u0000.md", "content": "\\ud800"}',
        "not allowed",
    ),
}


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("case", list(CALLS))
async def test_whatever_a_model_sends_the_stream_ends_and_the_page_renders(
    operator, fake, provider, case
):
    call_id, name, arguments, refused = CALLS[case]
    fake.custom_tool_call = {"id": call_id, "name": name, "arguments": arguments}
    key = await sync_to_async(make_key)(operator, fake, provider=provider)
    client = await client_for(operator)
    _, events = await stream(client, message="[[tool:custom]] go", key=key.pk)
    assert events[-1][0] == "done", events[-1]
    card = events[-1][1]["tool_calls"][0]
    assert CALL_ID.match(card["id"])
    assert len(card["name"]) <= 64
    if refused:
        assert card["state"] == "refused"
        assert refused in card["error"]
    else:
        assert card["state"] == "pending"
    conversation_id = events[0][1]["conversation"]
    response = await page(operator, conversation_id)
    assert response.status_code == 200
    assert f'data-call-id="{card["id"]}"' in response.content.decode()

    # The card can be decided through its URL, and the conversation goes on with the same id.
    url = f"/ai-chat/c/{conversation_id}/m/{events[-1][1]['message']}/actions/{card['id']}/"
    decided = await sync_to_async(lambda: signed_in(operator).post(url, {"decision": "approve"}))()
    assert decided.status_code == 200, decided.content
    assert decided.json()["card"]["state"] == ("failed" if refused else "done")
    _, events = await stream(client, conversation=conversation_id, **{"continue": "1"})
    assert events[-1][0] == "done"
    assert card["id"] in json.dumps(fake.requests[-1].body)


@pytest.mark.parametrize(
    "stored",
    [
        "not a list",
        ["not a card"],
        [{"id": "a/b", "name": "run_query", "state": "pending", "arguments": {}}],
        [{"id": "call_1", "name": 5, "state": "exploded", "arguments": "x", "change": "9"}],
        [{"id": "call_1", "name": "append_to_file", "state": "applied", "change": "../9"}],
    ],
)
def test_a_bad_stored_card_never_makes_the_page_500(operator, stored):
    conversation = Conversation.objects.create(owner=operator, title="old")
    Message.objects.create(conversation=conversation, role=Role.USER, content="hi")
    Message.objects.create(conversation=conversation, role=Role.ASSISTANT, tool_calls=stored)
    response = signed_in(operator).get(f"/ai-chat/c/{conversation.pk}/")
    assert response.status_code == 200


@pytest.mark.parametrize(
    "stored",
    [
        ["not a card"],
        [{"id": "call_1", "name": 5, "state": "exploded", "arguments": "x"}],
    ],
)
async def test_a_bad_stored_card_never_breaks_the_next_turn(operator, fake, stored):
    key = await sync_to_async(make_key)(operator, fake)
    conversation = await Conversation.objects.acreate(owner=operator, title="old", key=key)
    await Message.objects.acreate(conversation=conversation, role=Role.USER, content="hi")
    await Message.objects.acreate(
        conversation=conversation, role=Role.ASSISTANT, content="", tool_calls=stored
    )
    client = await client_for(operator)
    _, events = await stream(client, message="again", conversation=conversation.pk)
    assert events[-1][0] == "done", events[-1]


async def test_a_preview_that_crashes_still_ends_the_stream_with_a_refused_card(
    operator, fake, tmp_path, settings, monkeypatch
):
    from ai_chat.actions import files
    from ai_chat.models import ActionLog

    settings.FILE_ACTIONS_ROOT = str(tmp_path)

    def crash(*args, **kwargs):
        raise OSError("disk on fire")

    monkeypatch.setattr(files, "preview", crash)
    key = await sync_to_async(make_key)(operator, fake)
    client = await client_for(operator)
    _, events = await stream(client, message="[[tool:append]] go", key=key.pk)
    assert events[-1][0] == "done", events[-1]
    card = events[-1][1]["tool_calls"][0]
    assert (card["state"], card["error"]) == ("refused", "The preview failed unexpectedly.")
    log = await ActionLog.objects.aget()
    assert (log.kind, log.outcome) == ("append", "error")
