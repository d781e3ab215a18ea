"""Export from the chat header, in real Chromium, in both languages (the phone for Persian)."""

from __future__ import annotations

import json

import pytest

from ai_chat.models import Conversation
from tests.browser.conftest import screenshot
from tests.browser.test_flows import sign_in
from tests.conftest import make_key


@pytest.mark.parametrize(("language", "phone"), [("en", False), ("fa", True)])
def test_a_new_conversation_can_be_exported_from_its_header(
    live_asgi, open_page, alice, fake, language, phone
):
    make_key(alice, fake)
    page = open_page(language, phone)
    sign_in(page, live_asgi.url)
    page.goto(f"{live_asgi.url}/ai-chat/")
    assert not page.is_visible(".export")
    page.fill("#chat-input", "hello there")
    page.keyboard.press("Enter")
    page.wait_for_selector("article.assistant.complete")
    conversation = Conversation.objects.get(owner=alice)
    # The header offers Export without a reload, for this conversation.
    page.click(".export summary")
    screenshot(page, f"{language}-chat-export")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= (390 if phone else 1280)
    with page.expect_download() as info:
        page.click(".export button[value=md]")
    download = info.value
    assert download.suggested_filename == f"hello-there-{conversation.id}.md"
    text = open(download.path(), encoding="utf-8").read()
    assert "hello there" in text and "Hello! You said" in text
    with page.expect_download() as info:
        page.click(".export button[value=json]")
    data = json.loads(open(info.value.path(), encoding="utf-8").read())
    assert [m["role"] for m in data["messages"]] == ["user", "assistant"]
    assert page.watch.errors == [], page.watch.errors
