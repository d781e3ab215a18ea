"""The chat page's behaviour that issue #12 (the chat people prefer) asks for, in real Chromium."""

from __future__ import annotations

from django.urls import reverse

from ai_chat.models import Conversation
from tests.browser.conftest import screenshot
from tests.browser.test_flows import sign_in
from tests.conftest import make_key, user_with_permissions


def test_the_first_reply_moves_to_the_address_the_server_gave(live_asgi, page, alice, fake):
    make_key(alice, fake)
    sign_in(page, live_asgi.url)
    page.goto(f"{live_asgi.url}/ai-chat/")
    page.fill("#chat-input", "hello")
    page.keyboard.press("Enter")
    page.wait_for_selector("article.assistant.complete")
    conversation = Conversation.objects.get(owner=alice)
    expected = reverse("ai_chat:conversation", args=[conversation.id])
    page.wait_for_url(f"{live_asgi.url}{expected}")
    link = page.locator("#conversation-list a").first
    assert link.get_attribute("href") == expected
    assert page.watch.errors == [], page.watch.errors


def test_undo_gives_its_button_back_when_the_panel_cannot_be_reached(
    live_asgi, page, fake, tmp_path, settings
):
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "notes.md").write_text("# Notes\n")
    settings.FILE_ACTIONS_ROOT = str(workspace)
    user = user_with_permissions("olga", "write_files")
    make_key(user, fake)
    sign_in(page, live_asgi.url, "olga")
    page.goto(f"{live_asgi.url}/ai-chat/")
    page.fill("#chat-input", "[[tool:append]] add a function")
    page.keyboard.press("Enter")
    card = page.locator(".tool-card.pending")
    card.locator("[data-tool-decision=approve]").click()
    undo = page.locator(".tool-card.applied [data-undo-url]")
    undo.wait_for()

    # The network drops the undo request: the button works again and the user is told.
    page.route("**/undo/", lambda route: route.abort())
    undo.click()
    page.locator("#chat-status", has_text="could not be reached").wait_for()
    page.wait_for_function(
        "() => { const b = document.querySelector('.tool-card.applied [data-undo-url]');"
        " return b && !b.disabled; }"
    )
    assert "def added()" in (workspace / "notes.md").read_text()
    screenshot(page, "en-chat-undo-network-error")

    # Back online, the same button undoes the change.
    page.unroute("**/undo/")
    undo.click()
    page.locator(".tool-card.applied", has_text="Undone").wait_for()
    assert (workspace / "notes.md").read_text() == "# Notes\n"
    errors = [e for e in page.watch.errors if "ERR_FAILED" not in e]
    assert errors == [], errors
