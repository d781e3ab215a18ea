"""#12.9: approval cards show their true state after a reload, refusals show on the card, an
undo is reported back to the conversation, and the diff is coloured by classes."""

from __future__ import annotations

import json

import pytest
from asgiref.sync import sync_to_async

from ai_chat.actions.cards import NOTE_PREFIX, Card
from ai_chat.models import ActionLog, FileChange, Message, Role
from ai_chat.services import build_history
from tests.actions.test_chat_tools import PROVIDERS, decide, propose
from tests.ai_chat.helpers import stream
from tests.conftest import signed_in, user_with_permissions

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "readonly"])


def undo(user, change_id):
    return signed_in(user).post(
        f"/api/actions/changes/{change_id}/undo/", "{}", content_type="application/json"
    )


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_an_undone_card_stays_undone_after_a_reload_and_the_model_is_told(
    operator, fake, provider, workspace
):
    client, events = await propose(operator, fake, provider, "[[tool:append]]")
    card = events[-1][1]["tool_calls"][0]
    conversation_id, message_id = events[0][1]["conversation"], events[-1][1]["message"]
    url = f"/ai-chat/c/{conversation_id}/m/{message_id}/actions/{card['id']}/"
    body = (await decide(operator, url, "approve")).json()
    assert body["card"]["state"] == "applied"
    _, events = await stream(client, conversation=conversation_id, **{"continue": "1"})
    assert events[-1][0] == "done"

    response = await sync_to_async(undo)(operator, body["card"]["change"])
    assert response.status_code == 200, response.content
    answer = response.json()
    assert (answer["ok"], answer["change"]) == (True, body["card"]["change"])
    assert answer["card"]["state"] == "undone"
    assert 'data-state="undone"' in answer["html"]
    assert "data-undo-url" not in answer["html"]
    assert (workspace / "notes.md").read_text() == "# Notes\n"

    # A reload shows the card as it is: undone, with no Undo.
    page = await sync_to_async(lambda: signed_in(operator).get(f"/ai-chat/c/{conversation_id}/"))()
    html = page.content.decode()
    assert 'data-state="undone"' in html
    assert "data-undo-url" not in html
    reply = await Message.objects.aget(pk=message_id)
    assert reply.cards[0].state == "undone"

    # The next turn tells the model, in the conversation, before the user's new message.
    _, events = await stream(client, conversation=conversation_id, message="what now?")
    assert events[-1][0] == "done"
    sent = fake.requests[-1].body["messages"]
    last = sent[-1]
    text = last["content"] if isinstance(last["content"], str) else last["content"][0]["text"]
    assert last["role"] == "user"
    assert "undid this change" in text
    assert card["id"] in text
    assert text.rstrip().endswith("what now?")
    # The undo is audited once, as before.
    assert await ActionLog.objects.filter(kind="undo", outcome="ok").acount() == 1


async def test_an_undo_through_the_json_endpoint_of_a_previewed_change_has_no_card(
    operator, workspace
):
    """A change made through /api/actions/append/ belongs to no card: the answer is the
    contract's, and no note is stored anywhere."""
    client = await sync_to_async(signed_in)(operator)

    def run():
        preview = client.post(
            "/api/actions/append/",
            json.dumps({"path": "notes.md", "content": "x = 1\n"}),
            content_type="application/json",
        ).json()
        change = client.post(
            "/api/actions/append/confirm/",
            json.dumps({"token": preview["token"]}),
            content_type="application/json",
        ).json()["change"]
        return undo(operator, change)

    response = await sync_to_async(run)()
    assert response.status_code == 200
    assert set(response.json()) == {"ok", "change"}
    assert not await Message.objects.aexists()


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_query_the_validator_refuses_is_refused_on_its_card_without_run(
    operator, fake, provider, workspace
):
    fake.custom_tool_call = {
        "id": "call_delete",
        "name": "run_query",
        "arguments": json.dumps({"code": "Message.objects.filter(role='user').delete()"}),
    }
    _, events = await propose(operator, fake, provider, "[[tool:custom]]")
    done = events[-1][1]
    card = done["tool_calls"][0]
    assert card["state"] == "refused"
    assert "delete" in card["error"]
    html = done["cards_html"]
    assert 'data-tool-decision="approve"' not in html  # no primary Run
    assert 'data-tool-decision="reject"' in html  # only "Tell the assistant"
    assert "delete" in html
    assert not await ActionLog.objects.aexists()  # nothing ran
    conversation_id = events[0][1]["conversation"]
    page = await sync_to_async(lambda: signed_in(operator).get(f"/ai-chat/c/{conversation_id}/"))()
    assert 'data-tool-decision="approve"' not in page.content.decode()


async def test_a_query_that_passes_the_validator_still_offers_run(operator, fake, workspace):
    _, events = await propose(operator, fake, "openai", "[[tool:query]]")
    assert events[-1][1]["tool_calls"][0]["state"] == "pending"
    assert 'data-tool-decision="approve"' in events[-1][1]["cards_html"]


async def test_the_diff_has_a_class_per_line(operator, fake, workspace):
    _, events = await propose(operator, fake, "openai", "[[tool:append]]")
    html = events[-1][1]["cards_html"]
    assert '<span class="add">+def added():</span>' in html
    assert '<span class="hunk">@@' in html
    assert "style=" not in html


def test_diff_lines_name_each_kind():
    card = Card("c", "append_to_file", diff="--- a/x\n+++ b/x\n@@ -1 +1,2 @@\n a\n-b\n+c")
    assert card.diff_lines == [
        ("meta", "--- a/x"),
        ("meta", "+++ b/x"),
        ("hunk", "@@ -1 +1,2 @@"),
        ("", " a"),
        ("del", "-b"),
        ("add", "+c"),
    ]


def test_a_note_waits_until_the_open_calls_have_their_results(db):
    """Two cards on one reply: the first is applied and undone before the second is decided.
    Nothing may come between the tool calls and their results, so the note follows them."""
    calls = [
        {"id": "a", "name": "append_to_file", "arguments": {}, "state": "undone"},
        {"id": "b", "name": "run_query", "arguments": {}, "state": "done"},
    ]
    rows = [
        Message(id=1, role=Role.USER, content="do it"),
        Message(id=2, role=Role.ASSISTANT, content="", tool_calls=calls),
        Message(id=3, role=Role.TOOL, tool_call_id="a", content='{"ok": true}'),
        Message(id=4, role=Role.TOOL, tool_call_id=f"{NOTE_PREFIX}a", content='{"undone": true}'),
        Message(id=5, role=Role.TOOL, tool_call_id="b", content='{"rows": []}'),
    ]
    history = build_history(rows[::-1], 10_000)
    assert [m["role"] for m in history] == ["user", "assistant", "tool", "tool", "user"]
    assert '{"undone": true}' in history[-1]["content"]


async def test_a_card_undo_of_someone_elses_change_is_404_and_changes_nothing(
    operator, fake, workspace
):
    _, events = await propose(operator, fake, "openai", "[[tool:append]]")
    card = events[-1][1]["tool_calls"][0]
    conversation_id, message_id = events[0][1]["conversation"], events[-1][1]["message"]
    url = f"/ai-chat/c/{conversation_id}/m/{message_id}/actions/{card['id']}/"
    change = (await decide(operator, url, "approve")).json()["card"]["change"]
    other = await sync_to_async(user_with_permissions)("mallory", "write_files")
    response = await sync_to_async(undo)(other, change)
    assert response.status_code == 404
    assert (await FileChange.objects.aget(pk=change)).status == "applied"
    reply = await Message.objects.aget(pk=message_id)
    assert reply.cards[0].state == "applied"
