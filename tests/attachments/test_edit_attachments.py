"""An edited message keeps its attachments unless the user removes them (`drop_attachments`),
with real SDKs against the fake provider; hostile ids are refused and save nothing; deleting
one branch never deletes a file the other still shows."""

from __future__ import annotations

import os
from io import StringIO

import pytest
from asgiref.sync import sync_to_async
from django.core.management import call_command

from ai_chat.models import Attachment, Conversation, Message, Role
from tests.ai_chat.helpers import STREAM, client_for, parse_events, read_all
from tests.attachments import files
from tests.attachments.conftest import stored_files
from tests.conftest import make_key

pytestmark = pytest.mark.django_db(transaction=True)

PROVIDERS = ["openai", "anthropic"]


async def post(client, *uploads, **data):
    """POST a turn (multipart when there are files); (response, events)."""
    if uploads:
        data["files"] = list(uploads)
    response = await client.post(STREAM, data)
    if response.status_code != 200:
        return response, []
    return response, parse_events(await read_all(response))


async def message_with_two_files(user, fake, provider="openai"):
    """A conversation whose first user message carries an image and a text file; returns
    (client, conversation id, user message id, {name: attachment id})."""
    key = await sync_to_async(make_key)(user, fake, provider=provider)
    client = await client_for(user)
    _, events = await post(
        client,
        files.upload("cat.png", files.png()),
        files.upload("notes.txt", b"remember the milk\n", "text/plain"),
        message="Look at these",
        key=key.pk,
    )
    assert events[-1][0] == "done", events
    meta = events[0][1]
    ids = {
        row.name: row.pk async for row in Attachment.objects.filter(message_id=meta["user_message"])
    }
    return client, meta["conversation"], meta["user_message"], ids


def last_user_parts(fake) -> list:
    messages = fake.requests[-1].body["messages"]
    content = [m for m in messages if m["role"] == "user"][-1]["content"]
    return content if isinstance(content, list) else [{"type": "text", "text": content}]


def part_kinds(parts: list) -> list[str]:
    """What each part is, provider-neutral: image, or the text's first line."""
    kinds = []
    for part in parts:
        if part["type"] in ("image", "image_url"):
            kinds.append("image")
        else:
            kinds.append(part["text"].splitlines()[0])
    return kinds


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_an_edit_keeps_one_attachment_and_drops_the_other(alice, fake, provider, media):
    client, conversation, original, ids = await message_with_two_files(alice, fake, provider)
    fake.parts.clear()
    _, events = await post(
        client,
        message="Only the picture, please",
        edit=original,
        conversation=conversation,
        drop_attachments=ids["notes.txt"],
    )
    assert events[-1][0] == "done", events
    # The model saw exactly the kept image, in its provider's format, and not the dropped file.
    assert part_kinds(last_user_parts(fake)) == ["image", "Only the picture, please"]
    assert [(p.kind, p.media_type, p.flavour) for p in fake.parts] == [
        ("image", "image/png", provider)
    ]
    new = await Message.objects.aget(pk=events[0][1]["user_message"])
    assert (new.attachment_count, new.version, new.versions) == (1, 2, 2)
    [kept] = await sync_to_async(list)(Attachment.objects.filter(message=new))
    source = await Attachment.objects.aget(pk=ids["cat.png"])
    # The same stored file, named by a row of the new version (no copy); the old version
    # keeps both of its files.
    assert (kept.name, kept.file.name, kept.owner_id) == ("cat.png", source.file.name, alice.pk)
    # It keeps the sizes the budget bounds it by (an unknown size counts as the largest image).
    assert (kept.width, kept.height) == (source.width, source.height) != (None, None)
    assert await Attachment.objects.filter(message_id=original).acount() == 2
    assert len(stored_files(media)) == 2


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_an_edit_without_drop_keeps_every_attachment_and_takes_new_files(
    alice, fake, provider, media
):
    client, conversation, original, _ = await message_with_two_files(alice, fake, provider)
    _, events = await post(
        client,
        files.upload("extra.log", b"ERROR later\n", "text/plain"),
        message="And this log",
        edit=original,
        conversation=conversation,
    )
    assert events[-1][0] == "done", events
    assert part_kinds(last_user_parts(fake)) == [
        "image",
        "[File: notes.txt]",
        "[File: extra.log]",
        "And this log",
    ]
    new = await Message.objects.aget(pk=events[0][1]["user_message"])
    assert new.attachment_count == 3
    names = [row.name async for row in Attachment.objects.filter(message=new).order_by("id")]
    assert names == ["cat.png", "notes.txt", "extra.log"]
    assert len(stored_files(media)) == 3


async def test_dropping_every_attachment_takes_the_field_repeated(alice, fake, media):
    client, conversation, original, ids = await message_with_two_files(alice, fake)
    _, events = await post(
        client,
        message="No files now",
        edit=original,
        conversation=conversation,
        drop_attachments=[ids["cat.png"], ids["notes.txt"]],
    )
    assert events[-1][0] == "done", events
    assert last_user_parts(fake) == [{"type": "text", "text": "No files now"}]
    new = await Message.objects.aget(pk=events[0][1]["user_message"])
    assert new.attachment_count == 0
    assert not await Attachment.objects.filter(message=new).aexists()


async def test_dropping_by_json_list(alice, fake, media):
    client, conversation, original, ids = await message_with_two_files(alice, fake)
    response = await client.post(
        STREAM,
        {
            "message": "json",
            "edit": original,
            "conversation": conversation,
            "drop_attachments": [ids["cat.png"]],
        },
        content_type="application/json",
    )
    events = parse_events(await read_all(response))
    assert events[-1][0] == "done", events
    assert part_kinds(last_user_parts(fake)) == ["[File: notes.txt]", "json"]


async def bobs_attachment(bob, fake) -> int:
    key = await sync_to_async(make_key)(bob, fake)
    client = await client_for(bob)
    _, events = await post(
        client, files.upload("bob.txt", b"bob's", "text/plain"), message="mine", key=key.pk
    )
    assert events[-1][0] == "done"
    return (await Attachment.objects.aget(owner=bob)).pk


@pytest.mark.parametrize(
    "hostile,status",
    [
        ("bob", 404),  # another user's attachment
        ("other", 404),  # alice's own, but of another message
        ("999999", 404),  # no such attachment
        ("abc", 400),
        ("-1", 400),
        ("1.5", 400),
        ("99999999999999999999999", 400),
    ],
)
async def test_hostile_attachment_ids_are_refused_and_nothing_is_saved(
    alice, bob, fake, media, hostile, status
):
    bob_attachment = await bobs_attachment(bob, fake)
    client, conversation, original, ids = await message_with_two_files(alice, fake)
    _, events = await post(
        client,
        files.upload("other.txt", b"other", "text/plain"),
        message="another",
        conversation=conversation,
    )
    other = await Attachment.objects.aget(name="other.txt")
    value = {"bob": bob_attachment, "other": other.pk}.get(hostile, hostile)
    messages, rows, paths, requests = (
        await Message.objects.acount(),
        await Attachment.objects.acount(),
        stored_files(media),
        len(fake.requests),
    )
    response, _ = await post(
        client,
        files.upload("new.txt", b"new", "text/plain"),
        message="edited",
        edit=original,
        conversation=conversation,
        drop_attachments=[ids["notes.txt"], value],
    )
    assert response.status_code == status, response.content
    assert response.json()["error"]
    assert await Message.objects.acount() == messages
    assert await Attachment.objects.acount() == rows
    assert stored_files(media) == paths
    assert len(fake.requests) == requests
    # The original branch is still the one shown.
    assert await Message.objects.filter(pk=original, active=True).aexists()


async def test_drop_attachments_without_an_edit_is_refused(alice, fake, media):
    client, conversation, _, ids = await message_with_two_files(alice, fake)
    response, _ = await post(
        client, message="hi", conversation=conversation, drop_attachments=ids["cat.png"]
    )
    assert response.status_code == 400
    assert "edited" in response.json()["error"]
    assert await Message.objects.acount() == 2


async def test_kept_and_new_files_together_keep_to_the_limit(alice, fake, media, settings):
    settings.CHAT_MAX_ATTACHMENTS = 2
    client, conversation, original, _ = await message_with_two_files(alice, fake)
    response, _ = await post(
        client,
        files.upload("third.txt", b"3", "text/plain"),
        message="three files",
        edit=original,
        conversation=conversation,
    )
    assert response.status_code == 413
    assert "2" in response.json()["error"]
    assert len(stored_files(media)) == 2 and await Message.objects.acount() == 2


async def test_deleting_one_branch_keeps_the_files_the_other_still_shows(alice, fake, media):
    chat, conversation, original, ids = await message_with_two_files(alice, fake)
    _, events = await post(
        chat,
        message="picture only",
        edit=original,
        conversation=conversation,
        drop_attachments=ids["notes.txt"],
    )
    new = events[0][1]["user_message"]
    kept = await Attachment.objects.aget(message_id=new)
    # The old version deleted on its own (as the admin or a queryset would), then the orphans
    # command: the picture the new version shows stays, the dropped text file goes.
    await Message.objects.filter(pk=original).adelete()
    await sync_to_async(call_command)("remove_orphan_attachments", stdout=StringIO())
    assert [p.name for p in stored_files(media)] == [os.path.basename(kept.file.name)]
    response = await chat.get(f"/ai-chat/attachments/{kept.pk}/")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/png"

    # Deleting the conversation deletes the files of every version.
    await sync_to_async((await Conversation.objects.aget(pk=conversation)).delete)()
    assert stored_files(media) == []


async def test_the_thread_shows_each_versions_attachments(alice, fake, media):
    client, conversation, original, ids = await message_with_two_files(alice, fake)
    await post(
        client,
        message="picture only",
        edit=original,
        conversation=conversation,
        drop_attachments=ids["notes.txt"],
    )
    page = (await client.get(f"/ai-chat/c/{conversation}/")).content.decode()
    assert "cat.png" in page and "notes.txt" not in page
    new = await Message.objects.aget(conversation_id=conversation, role=Role.USER, version=2)
    [kept] = [row async for row in Attachment.objects.filter(message=new)]
    assert f'data-attachment-id="{kept.pk}"' in page
    await client.post(f"/ai-chat/messages/{new.pk}/version/", {"version": 1})
    page = (await client.get(f"/ai-chat/c/{conversation}/")).content.decode()
    assert "cat.png" in page and "notes.txt" in page
