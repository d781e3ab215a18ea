"""GET /ai-chat/attachments/<id>/ (owner only), and files removed with their conversation."""

from __future__ import annotations

import os
import time
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import transaction

from ai_chat import attachments
from ai_chat.models import Attachment, Conversation, Message, Role
from tests.attachments import files
from tests.attachments.conftest import stored_files

pytestmark = pytest.mark.django_db


def attach(owner, *named: tuple[str, bytes, str], conversation=None) -> list[Attachment]:
    """A user message of `owner` carrying the files, stored as a turn stores them."""
    conversation = conversation or Conversation.objects.create(owner=owner, title="t")
    message = Message.objects.create(
        conversation=conversation, role=Role.USER, content="see", attachment_count=len(named)
    )
    prepared = [attachments.prepare(name, data, kind) for name, data, kind in named]
    with attachments.stored(prepared) as saved:
        return attachments.create_rows(message, owner, saved)


def test_the_owner_gets_an_image_inline_with_safe_headers(alice, alice_client):
    [row] = attach(alice, ("photo.png", files.png(), "image/png"))
    response = alice_client.get(f"/ai-chat/attachments/{row.pk}/")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert response["Content-Disposition"].startswith("inline")
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "default-src 'none'" in response["Content-Security-Policy"]
    assert b"".join(response.streaming_content) == row.file.open("rb").read()


@pytest.mark.parametrize(
    "name,data,kind,content_type",
    [
        ("report.pdf", files.pdf(), "application/pdf", "application/pdf"),
        ("page.html", b"<script>alert(1)</script>", "text/html", "text/plain; charset=utf-8"),
    ],
)
def test_anything_but_an_image_is_a_download(alice, alice_client, name, data, kind, content_type):
    [row] = attach(alice, (name, data, kind))
    response = alice_client.get(f"/ai-chat/attachments/{row.pk}/")
    assert response.status_code == 200
    assert response["Content-Type"] == content_type
    assert response["Content-Disposition"] == f'attachment; filename="{name}"'
    assert response["X-Content-Type-Options"] == "nosniff"


def test_it_checks_ownership(alice, bob_client):
    [row] = attach(alice, ("photo.png", files.png(), "image/png"))
    assert bob_client.get(f"/ai-chat/attachments/{row.pk}/").status_code == 404
    assert bob_client.get(f"/ai-chat/attachments/{row.pk + 1000}/").status_code == 404


def test_signed_out_is_sent_to_sign_in(alice, client):
    [row] = attach(alice, ("photo.png", files.png(), "image/png"))
    response = client.get(f"/ai-chat/attachments/{row.pk}/")
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_with_x_accel_nginx_is_handed_the_file(alice, alice_client, settings):
    settings.CHAT_ATTACHMENTS_X_ACCEL = True
    [row] = attach(alice, ("report.pdf", files.pdf(), "application/pdf"))
    response = alice_client.get(f"/ai-chat/attachments/{row.pk}/")
    assert response.status_code == 200
    name = row.file.name.removeprefix("attachments/")
    assert response["X-Accel-Redirect"] == f"/_attachments/{name}"
    assert response.content == b""
    assert response["Content-Disposition"].startswith("attachment")


@pytest.mark.django_db(transaction=True)
def test_deleting_a_conversation_deletes_its_files_after_the_commit(alice, alice_client, media):
    conversation = Conversation.objects.create(owner=alice, title="t")
    attach(alice, ("a.png", files.png(), "image/png"), conversation=conversation)
    attach(alice, ("b.txt", b"hello", "text/plain"), conversation=conversation)
    kept = attach(alice, ("c.txt", b"other", "text/plain"))
    assert len(stored_files(media)) == 3
    with transaction.atomic():
        conversation.delete()
        assert len(stored_files(media)) == 3  # not before the commit
    assert [p.name for p in stored_files(media)] == [os.path.basename(kept[0].file.name)]
    assert list(Attachment.objects.all()) == kept

    # Through the page's delete button as well.
    response = alice_client.post(f"/ai-chat/c/{kept[0].message.conversation_id}/delete/")
    assert response.status_code == 302
    assert stored_files(media) == [] and not Attachment.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_delete_keeps_the_files(alice, media):
    conversation = Conversation.objects.create(owner=alice, title="t")
    attach(alice, ("a.png", files.png(), "image/png"), conversation=conversation)
    with pytest.raises(RuntimeError), transaction.atomic():
        conversation.delete()
        raise RuntimeError
    assert len(stored_files(media)) == 1 and Attachment.objects.count() == 1


def test_a_failure_inside_stored_removes_what_it_wrote(media):
    prepared = [attachments.prepare("a.txt", b"one", "text/plain")]
    with pytest.raises(RuntimeError), attachments.stored(prepared) as saved:
        assert len(stored_files(media)) == 1 and saved
        raise RuntimeError
    assert stored_files(media) == []


def test_the_orphans_command_removes_rows_and_files_nothing_refers_to(alice, media):
    [gone] = attach(alice, ("gone.txt", b"bye", "text/plain"))
    [kept] = attach(alice, ("kept.txt", b"hi", "text/plain"))
    # A message deleted on its own (the admin, a queryset) leaves its attachment row behind.
    Message.objects.filter(pk=gone.message_id).delete()
    stray_old = media / "attachments" / "stray-old.txt"
    stray_new = media / "attachments" / "stray-new.txt"
    stray_old.write_bytes(b"x")
    stray_new.write_bytes(b"x")
    old = time.time() - 2 * 3600
    os.utime(stray_old, (old, old))

    out = StringIO()
    call_command("remove_orphan_attachments", "--dry-run", stdout=out)
    assert "would remove 1 rows and 2 files" in out.getvalue()
    assert len(stored_files(media)) == 4

    call_command("remove_orphan_attachments", stdout=StringIO())
    assert list(Attachment.objects.all()) == [kept]
    # The young stray stays: a turn may be about to save its row.
    assert {p.name for p in stored_files(media)} == {
        os.path.basename(kept.file.name),
        "stray-new.txt",
    }


@pytest.mark.parametrize("count", [1, 8])
def test_the_thread_lists_attachments_in_one_query_at_any_size(
    alice, alice_client, django_assert_num_queries, count
):
    conversation = Conversation.objects.create(owner=alice, title="t")
    rows = []
    for index in range(count):
        rows += attach(
            alice,
            (f"shot{index}.png", files.png(), "image/png"),
            (f"notes{index}.txt", b"hi", "text/plain"),
            conversation=conversation,
        )
    Message.objects.create(conversation=conversation, role=Role.USER, content="no files")
    # Session, user, conversation, conversation list, keys, the page of messages, and one
    # query for the attachments of the messages that have some.
    with django_assert_num_queries(7):
        response = alice_client.get(f"/ai-chat/c/{conversation.pk}/")
    html = response.content.decode()
    for row in rows:
        assert f'href="/ai-chat/attachments/{row.pk}/"' in html
    assert html.count('<img src="/ai-chat/attachments/') == count
    assert html.count(" download>") == count
