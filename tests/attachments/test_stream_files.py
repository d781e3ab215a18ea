"""Attachments through the stream endpoint: real SDKs against the fake provider, which checks
each part the way the real APIs do (tests/fakes/server.py)."""

from __future__ import annotations

import base64
import io

import pytest
from asgiref.sync import sync_to_async
from PIL import Image

from ai_chat.models import Attachment, Conversation, Message
from api_manager.models import UsageRecord
from tests.ai_chat.helpers import STREAM, client_for, parse_events, read_all
from tests.attachments import files
from tests.attachments.conftest import stored_files
from tests.conftest import make_key
from tests.fakes.server import DOCUMENT_TOKENS, IMAGE_TOKENS

pytestmark = pytest.mark.django_db(transaction=True)

PROVIDERS = ["openai", "anthropic"]


async def send(client, *uploads, **data):
    response = await client.post(STREAM, {**data, "files": list(uploads)})
    if response.status_code != 200:
        return response, []
    return response, parse_events(await read_all(response))


async def setup(user, fake, provider):
    key = await sync_to_async(make_key)(user, fake, provider=provider)
    return key, await client_for(user)


def user_parts(fake) -> list:
    """The content parts of the last user turn the fake received."""
    messages = fake.requests[-1].body["messages"]
    return [m for m in messages if m["role"] == "user"][-1]["content"]


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_an_image_arrives_as_the_providers_image_part_without_its_metadata(
    alice, fake, provider, media
):
    key, client = await setup(alice, fake, provider)
    response, events = await send(
        client, files.upload("photo.png", files.png()), message="What is this?", key=key.pk
    )
    assert response.status_code == 200
    assert events[-1][0] == "done", events[-1]
    parts = user_parts(fake)
    if provider == "openai":
        assert parts[0]["type"] == "image_url"
        assert parts[0]["image_url"]["url"].startswith("data:image/png;base64,")
        data = base64.b64decode(parts[0]["image_url"]["url"].split(",", 1)[1])
    else:
        assert parts[0]["type"] == "image"
        assert parts[0]["source"]["type"] == "base64"
        assert parts[0]["source"]["media_type"] == "image/png"
        data = base64.b64decode(parts[0]["source"]["data"])
    assert parts[-1] == {"type": "text", "text": "What is this?"}
    assert [(p.kind, p.media_type) for p in fake.parts] == [("image", "image/png")]
    # Re-encoded: the EXIF block with its GPS position did not travel, nor is it stored.
    assert b"SecretCam" not in data and dict(Image.open(io.BytesIO(data)).getexif()) == {}
    [row] = await sync_to_async(list)(Attachment.objects.all())
    assert (row.name, row.kind, row.owner_id) == ("photo.png", "image", alice.pk)
    [path] = stored_files(media)
    assert path.read_bytes() == data and "photo" not in path.name
    user_message = await Message.objects.aget(pk=events[0][1]["user_message"])
    assert user_message.attachment_count == 1
    # The provider's input tokens include the image; the record says one file travelled.
    record = await UsageRecord.objects.aget()
    assert record.attachments == 1
    assert record.input_tokens == len("What is this?".split()) + IMAGE_TOKENS


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(
    "name,make,media_type",
    [
        ("shot.jpg", lambda: files.jpeg((200, 100)), "image/jpeg"),
        ("anim.gif", files.gif, "image/png"),
        ("pic.webp", files.webp, "image/png"),
    ],
)
async def test_every_image_type_is_taken(alice, fake, provider, name, make, media_type):
    key, client = await setup(alice, fake, provider)
    response, events = await send(client, files.upload(name, make()), message="see", key=key.pk)
    assert response.status_code == 200 and events[-1][0] == "done"
    assert [(p.kind, p.media_type) for p in fake.parts] == [("image", media_type)]


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_large_image_is_scaled_down_to_the_long_side(alice, fake, provider, settings):
    key, client = await setup(alice, fake, provider)
    await send(client, files.upload("big.jpg", files.jpeg((3000, 2000))), message="x", key=key.pk)
    [part] = fake.parts
    assert Image.open(io.BytesIO(part.data)).size == (settings.CHAT_IMAGE_MAX_SIDE, 1045)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_pdf_arrives_as_a_document_part(alice, fake, provider):
    key, client = await setup(alice, fake, provider)
    response, events = await send(
        client, files.upload("report.pdf", files.pdf()), message="Summarise", key=key.pk
    )
    assert events[-1][0] == "done", events[-1]
    parts = user_parts(fake)
    if provider == "openai":
        assert parts[0]["type"] == "file"
        assert parts[0]["file"]["filename"] == "report.pdf"
        assert parts[0]["file"]["file_data"].startswith("data:application/pdf;base64,")
    else:
        assert parts[0]["type"] == "document"
        assert parts[0]["source"]["media_type"] == "application/pdf"
        assert parts[0]["title"] == "report.pdf"
    assert [(p.kind, p.name) for p in fake.parts] == [("document", "report.pdf")]
    record = await UsageRecord.objects.aget()
    assert record.input_tokens == 1 + DOCUMENT_TOKENS and record.attachments == 1


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_with_pdf_native_off_a_pdf_is_sent_as_its_text(alice, fake, provider, settings):
    settings.CHAT_ATTACHMENT_PDF_NATIVE = False
    key, client = await setup(alice, fake, provider)
    _, events = await send(
        client, files.upload("report.pdf", files.pdf()), message="Summarise", key=key.pk
    )
    assert events[-1][0] == "done"
    parts = user_parts(fake)
    assert parts[0] == {
        "type": "text",
        "text": "[File: report.pdf]\nQuarterly report: revenue grew",
    }
    assert fake.parts == []


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_an_endpoint_that_refuses_documents_gets_the_pdfs_text(alice, fake, provider):
    fake.refuse_documents = True
    key, client = await setup(alice, fake, provider)
    _, events = await send(
        client, files.upload("report.pdf", files.pdf()), message="Summarise", key=key.pk
    )
    assert events[-1][0] == "done", events
    assert len(fake.requests) == 2  # refused with the document, answered with its text
    assert user_parts(fake)[0]["text"].endswith("Quarterly report: revenue grew")
    assert "".join(d["text"] for n, d in events if n == "delta").startswith("Hello!")


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_text_file_is_a_text_part_headed_with_its_name(alice, fake, provider):
    key, client = await setup(alice, fake, provider)
    code = "def f():\n    return 'سلام'\n"
    _, events = await send(
        client,
        files.upload("tool.py", code.encode(), "text/x-python"),
        files.upload("server.log", b"ERROR boom\n", "application/octet-stream"),
        message="Why?",
        key=key.pk,
    )
    assert events[-1][0] == "done"
    parts = user_parts(fake)
    assert parts[0] == {"type": "text", "text": "[File: tool.py]\n" + code}
    assert parts[1] == {"type": "text", "text": "[File: server.log]\nERROR boom\n"}
    assert (await UsageRecord.objects.aget()).attachments == 2


async def test_a_text_file_longer_than_the_context_is_cut_with_a_note(alice, fake, settings):
    settings.CHAT_CONTEXT_CHARS = 100
    key, client = await setup(alice, fake, "openai")
    _, events = await send(
        client, files.upload("big.txt", b"x" * 500, "text/plain"), message="hm", key=key.pk
    )
    assert events[-1][0] == "done"
    text = user_parts(fake)[0]["text"]
    assert "x" * 100 in text and "x" * 101 not in text
    assert "cut: the file is longer than 100 characters" in text


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_the_history_keeps_attachments_and_drops_old_images_when_tight(
    alice, fake, provider, settings
):
    key, client = await setup(alice, fake, provider)
    _, events = await send(client, files.upload("cat.png", files.png()), message="one", key=key.pk)
    conversation = events[0][1]["conversation"]
    _, events = await send(client, message="two", conversation=conversation)
    assert events[-1][0] == "done"
    first = fake.requests[-1].body["messages"][-3 if provider == "openai" else -3]["content"]
    assert first[0]["type"] in ("image_url", "image")
    # Tight: the budget holds the older turn's text but not its image.
    settings.CHAT_CONTEXT_CHARS = 200
    _, events = await send(client, message="three", conversation=conversation)
    assert events[-1][0] == "done"
    sent = fake.requests[-1].body["messages"]
    first = sent[-5]["content"]
    assert first[0] == {"type": "text", "text": "[image: cat.png]"}
    assert first[1] == {"type": "text", "text": "one"}
    assert len(fake.parts) == 2  # the image travelled on the first two turns only
    assert (await UsageRecord.objects.order_by("-id").afirst()).attachments == 0


async def test_files_are_refused_with_regenerate(alice, fake, media):
    key, client = await setup(alice, fake, "openai")
    _, events = await send(client, message="one", key=key.pk)
    conversation = events[0][1]["conversation"]
    response, _ = await send(
        client, files.upload("a.png", files.png()), conversation=conversation, regenerate="1"
    )
    assert response.status_code == 400
    assert "new message" in response.json()["error"]
    assert stored_files(media) == [] and await Attachment.objects.acount() == 0


@pytest.mark.parametrize(
    "uploads,status,words",
    [
        ([files.upload("setup.png", files.exe())], 415, ["setup.png", "executable"]),
        ([files.upload("bomb.png", files.bomb())], 413, ["bomb.png", "too large"]),
        ([files.upload("blob.bin", bytes(range(256)) * 4)], 415, ["blob.bin"]),
        ([files.upload("data.xyz", b"plain words")], 415, ["data.xyz"]),
        ([files.upload("broken.png", b"\x89PNG\r\n\x1a\n" + b"junk" * 10)], 400, ["broken.png"]),
        ([files.upload("empty.txt", b"", "text/plain")], 400, ["empty.txt"]),
        ([files.upload(f"f{i}.txt", b"hi", "text/plain") for i in range(6)], 413, ["5"]),
    ],
)
async def test_a_refused_file_is_a_4xx_naming_it_and_nothing_is_saved(
    alice, fake, media, uploads, status, words
):
    key, client = await setup(alice, fake, "openai")
    response, _ = await send(client, *uploads, message="look", key=key.pk)
    assert response.status_code == status, response.content
    error = response.json()["error"]
    for word in words:
        assert word in error
    assert await Message.objects.acount() == 0
    assert await Conversation.objects.acount() == 0
    assert await Attachment.objects.acount() == 0
    assert stored_files(media) == []
    assert fake.requests == []


async def test_size_limits_come_from_settings(alice, fake, media, settings):
    settings.CHAT_MAX_ATTACHMENT_BYTES = 1000
    settings.CHAT_MAX_ATTACHMENTS_TOTAL_BYTES = 1500
    key, client = await setup(alice, fake, "openai")
    response, _ = await send(
        client, files.upload("big.txt", b"a" * 1001, "text/plain"), message="x", key=key.pk
    )
    assert response.status_code == 413
    assert "big.txt" in response.json()["error"]
    response, _ = await send(
        client,
        files.upload("a.txt", b"a" * 800, "text/plain"),
        files.upload("b.txt", b"b" * 800, "text/plain"),
        message="x",
        key=key.pk,
    )
    assert response.status_code == 413
    assert "together" in response.json()["error"]
    assert stored_files(media) == [] and await Message.objects.acount() == 0


async def test_a_turn_refused_after_the_files_were_written_removes_them(alice, fake, media):
    """A refusal inside the turn's transaction (the key's budget) leaves no file behind."""
    key, client = await setup(alice, fake, "openai")
    key.monthly_token_budget = 1
    await key.asave(update_fields=["monthly_token_budget"])
    response, _ = await send(
        client, files.upload("notes.txt", b"hello", "text/plain"), message="x", key=key.pk
    )
    assert response.status_code == 429, response.content
    assert stored_files(media) == [] and await Attachment.objects.acount() == 0
