"""What the providers bill an attachment by, kept on its row for the budget's input bound: an
image's pixel size after the re-encode, a PDF's page count (and, for rows from before, read
from the stored file by the migration)."""

from __future__ import annotations

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection

from ai_chat import attachments
from ai_chat.models import Attachment
from api_manager import budget
from tests.attachments import files
from tests.attachments.test_serving import attach

pytestmark = pytest.mark.django_db


def test_an_image_keeps_its_size_after_the_re_encode_and_a_pdf_its_pages(alice, settings):
    settings.CHAT_IMAGE_MAX_SIDE = 500
    big, small, pdf, text = attach(
        alice,
        ("big.png", files.png((1000, 400)), "image/png"),
        ("small.png", files.png((64, 48)), "image/png"),
        ("report.pdf", files.pdf(), "application/pdf"),
        ("notes.txt", b"hello", "text/plain"),
    )
    # Scaled to the long side of settings: the size is what is sent, not what was uploaded.
    assert (big.width, big.height) == (500, 200)
    assert (small.width, small.height, small.pages) == (64, 48, None)
    assert (pdf.width, pdf.height, pdf.pages) == (None, None, 1)
    assert (text.width, text.height, text.pages) == (None, None, None)
    stored = Attachment.objects.get(pk=big.pk)
    assert (stored.width, stored.height) == (500, 200)


def test_the_parts_carry_the_sizes_to_the_budget(alice):
    image, pdf = attach(
        alice,
        ("a.png", files.png((800, 600)), "image/png"),
        ("report.pdf", files.pdf(), "application/pdf"),
    )
    message = image.message
    message.attached = [image, pdf]
    parts = attachments.content_for(message)
    assert (parts[0]["width"], parts[0]["height"]) == (800, 600)
    assert parts[1]["pages"] == 1
    turn = [{"role": "user", "content": parts}]
    bound = budget.input_bound(turn, model="gpt-4o")
    assert bound > budget.image_tokens(800, 600, "gpt-4o") + budget.pdf_page_tokens("gpt-4o")


@pytest.mark.django_db(transaction=True)
def test_the_migration_reads_the_sizes_of_existing_files(alice, media):
    from django.db.migrations.executor import MigrationExecutor

    before = [("ai_chat", "0007_message_created_index")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    old = executor.loader.project_state(before).apps
    Conversation = old.get_model("ai_chat", "Conversation")
    Message = old.get_model("ai_chat", "Message")
    OldAttachment = old.get_model("ai_chat", "Attachment")
    conversation = Conversation.objects.create(owner_id=alice.pk, title="old")
    message = Message.objects.create(conversation=conversation, role="user", content="see")
    rows = {}
    for name, kind, data in (
        ("photo.png", "image", files.png((320, 200))),
        ("report.pdf", "pdf", files.pdf()),
        ("gone.png", "image", None),
    ):
        path = f"attachments/{name}"
        if data is not None:
            path = default_storage.save(path, ContentFile(data))
        rows[name] = OldAttachment.objects.create(
            message=message, owner_id=alice.pk, file=path, name=name, kind=kind,
            content_type="image/png" if kind == "image" else "application/pdf", size=1,
        )  # fmt: skip

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
    photo, report, gone = (Attachment.objects.get(pk=rows[n].pk) for n in rows)
    assert (photo.width, photo.height) == (320, 200)
    assert report.pages == 1
    # A file that cannot be read stays unknown (it cannot be sent either).
    assert (gone.width, gone.height, gone.pages) == (None, None, None)
