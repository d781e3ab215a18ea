"""The chat page's behaviour that issue #12 (the chat people prefer) asks for, in real Chromium."""

from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils import translation
from django.utils.translation import gettext

from ai_chat.models import Conversation
from tests.browser.conftest import screenshot
from tests.browser.test_flows import sign_in
from tests.conftest import make_key, user_with_permissions


def test_the_first_reply_moves_to_the_address_the_server_gave(live_asgi, page, alice, fake):
    make_key(alice, fake)
    sign_in(page, live_asgi.url)
    page.goto(f"{live_asgi.url}/ai-chat/")
    page.fill("#chat-input", "  hello\n")
    page.keyboard.press("Enter")
    page.wait_for_selector("article.assistant.complete")
    conversation = Conversation.objects.get(owner=alice)
    expected = reverse("ai_chat:conversation", args=[conversation.id])
    page.wait_for_url(f"{live_asgi.url}{expected}")
    link = page.locator("#conversation-list a").first
    assert link.get_attribute("href") == expected

    # The header names it and offers Rename and Delete without a reload.
    assert page.inner_text("#chat-title") == conversation.title == "hello"
    assert "hello" in page.title()
    page.click(".rename summary")
    assert page.input_value(".rename input[name=title]") == "hello"
    page.fill(".rename input[name=title]", "Renamed at once")
    page.click(".rename button[type=submit]")
    page.locator("#chat-title", has_text="Renamed at once").wait_for()
    conversation.refresh_from_db()
    assert conversation.title == "Renamed at once"
    page.goto(f"{live_asgi.url}/ai-chat/")
    assert not page.locator(".chat-head .danger").is_visible()
    assert not page.locator(".rename").is_visible()
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
    page.locator("#chat-alert", has_text="could not be reached").wait_for()
    page.wait_for_function(
        "() => { const b = document.querySelector('.tool-card.applied [data-undo-url]');"
        " return b && !b.disabled; }"
    )
    assert "def added()" in (workspace / "notes.md").read_text()
    screenshot(page, "en-chat-undo-network-error")

    # Back online, the same button undoes the change.
    page.unroute("**/undo/")
    undo.click()
    page.locator(".tool-card.undone").wait_for()
    assert page.locator("[data-undo-url]").count() == 0
    assert (workspace / "notes.md").read_text() == "# Notes\n"
    errors = [e for e in page.watch.errors if "ERR_FAILED" not in e]
    assert errors == [], errors


@pytest.mark.parametrize(("language", "phone"), [("en", False), ("fa", True)])
def test_every_refusal_before_a_reply_shows_by_the_message_box_and_keeps_the_text(
    live_asgi, open_page, alice, fake, language, phone
):
    from api_manager.models import UsageRecord

    no_model = make_key(alice, fake, label="No model", default_model="")
    spent = make_key(alice, fake, label="Spent", monthly_token_budget=10)
    UsageRecord.objects.create(
        key=spent, user=alice, provider="openai", input_tokens=20, output_tokens=20
    )
    page = open_page(language, phone)
    sign_in(page, live_asgi.url)
    page.goto(f"{live_asgi.url}/ai-chat/")
    alert = page.locator("#chat-alert[role=alert]")
    assert not alert.is_visible()

    def refused(key_id: int, text: str, *expected: str) -> str:
        page.select_option("select[name=key]", str(key_id))
        page.fill("#chat-input", text)
        page.click("#chat-send")
        alert.wait_for(state="visible")
        said = alert.inner_text()
        for words in expected:
            assert words in said, (words, said)
        # The typed text stays, and nothing of the refused turn is left in the thread.
        assert page.input_value("#chat-input") == text
        assert page.locator("article.msg").count() == 0
        assert page.evaluate("document.activeElement.id") == "chat-input"
        box = alert.bounding_box()
        composer = page.locator("#composer").bounding_box()
        assert composer["y"] <= box["y"] <= composer["y"] + composer["height"]
        return said

    with translation.override(language):
        refused(no_model.id, "hello", gettext("Choose a model: this key has no default model."))
        screenshot(page, f"{'phone-' if phone else ''}{language}-chat-refused-no-model")
        refused(
            spent.id,
            "hello",
            gettext("The API key “%(label)s” has used its monthly token budget.")
            % {"label": "Spent"},
            gettext("Choose another key below, or try again later."),
        )
        refused(spent.id, "x" * 33_000, gettext("Shorten it, or split it into several messages."))
        screenshot(page, f"{'phone-' if phone else ''}{language}-chat-refused-too-long")

        # The panel cannot be reached at all: the same place says so.
        page.route("**/ai-chat/stream/", lambda route: route.abort())
        refused(
            no_model.id, "hello", gettext("The panel could not be reached. Check your connection.")
        )
        page.unroute("**/ai-chat/stream/")

    # The next try that goes through clears the alert.
    page.select_option("select[name=key]", str(no_model.id))
    page.fill("input[name=model]", "gpt-4o-mini")
    page.fill("#chat-input", "hello")
    page.click("#chat-send")
    page.wait_for_selector("article.assistant.complete")
    assert not alert.is_visible()
    assert page.input_value("#chat-input") == ""
    errors = [e for e in page.watch.errors if "status of 4" not in e and "ERR_FAILED" not in e]
    assert errors == [], errors
