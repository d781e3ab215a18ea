"""Every page on a 390×844 phone and on a desktop, in English and Persian: nothing scrolls
sideways, the sidebar opens as a drawer from a menu button, the conversation list sits behind a
button, wide tables and code scroll inside their own box, and the message box stays in its card."""

from __future__ import annotations

import pytest

from ai_chat.models import Conversation, Message
from api_manager.models import UsageRecord
from tests.browser.conftest import screenshot
from tests.browser.test_flows import sign_in
from tests.conftest import make_key

WIDE_REPLY = (
    "A table wider than a phone:\n\n"
    "| " + " | ".join(f"column{i}" for i in range(12)) + " |\n"
    "|" + "---|" * 12 + "\n"
    "| " + " | ".join(f"value{i}" for i in range(12)) + " |\n\n"
    "```python\nprint('" + "a long line of code " * 12 + "')\n```"
)


@pytest.fixture
def data(alice, fake):
    key = make_key(alice, fake, label="A key with a rather long label for a phone screen")
    UsageRecord.objects.create(
        key=key,
        user=alice,
        provider="openai",
        model="gpt-4o-mini",
        input_tokens=12,
        output_tokens=34,
    )
    conversation = Conversation.objects.create(owner=alice, title="Wide things")
    question = Message(conversation=conversation, role="user")
    question.set_content("Show me something wide: " + "x" * 80)
    question.save()
    reply = Message(conversation=conversation, role="assistant", model="gpt-4o-mini")
    reply.set_content(WIDE_REPLY)
    reply.save()
    return {"key": key, "conversation": conversation}


def paths(data) -> dict[str, str]:
    return {
        "dashboard": "/",
        "chat-new": "/ai-chat/",
        "chat": f"/ai-chat/c/{data['conversation'].id}/",
        "keys": "/api-manager/settings/",
        "usage": f"/api-manager/keys/{data['key'].id}/usage/",
    }


def overflow(page) -> int:
    """How far the page reaches past the viewport's width (a phone browser widens its layout
    viewport to the content, so window.innerWidth cannot be the measure)."""
    width = page.viewport_size["width"]
    return page.evaluate("document.documentElement.scrollWidth") - width


def inside(inner: dict, outer: dict, slack: float = 1.0) -> bool:
    return (
        inner["x"] >= outer["x"] - slack
        and inner["x"] + inner["width"] <= outer["x"] + outer["width"] + slack
    )


@pytest.mark.parametrize("language", ["en", "fa"])
def test_every_page_fits_a_phone(live_asgi, open_page, data, language):
    page = open_page(language, phone=True)
    page.goto(f"{live_asgi.url}/login/")
    assert overflow(page) <= 0, ("login", overflow(page))
    screenshot(page, f"phone-{language}-login")
    sign_in(page, live_asgi.url)
    viewport = {"x": 0, "width": 390}
    for name, path in paths(data).items():
        page.goto(live_asgi.url + path)
        assert overflow(page) <= 0, (name, overflow(page))
        # The sidebar is folded; the menu button is on screen and opens it as a drawer.
        menu = page.locator("[data-action=menu]")
        assert not page.locator(".sidebar").is_visible(), name
        assert inside(menu.bounding_box(), viewport), (name, menu.bounding_box())
        assert menu.get_attribute("aria-expanded") == "false"
        screenshot(page, f"phone-{language}-{name}")
        menu.click()
        drawer = page.locator(".sidebar")
        drawer.wait_for(state="visible")
        assert menu.get_attribute("aria-expanded") == "true"
        assert inside(drawer.bounding_box(), viewport), (name, drawer.bounding_box())
        assert overflow(page) <= 0, (name, "drawer", overflow(page))
        if name == "dashboard":
            screenshot(page, f"phone-{language}-drawer")
        # Escape closes it and gives the focus back to the button.
        page.keyboard.press("Escape")
        drawer.wait_for(state="hidden")
        assert page.evaluate("document.activeElement.dataset.action") == "menu"
        for table in page.locator("main table:visible").all():
            # A wide table scrolls inside its own box, which stays on screen.
            box = table.evaluate_handle("t => t.closest('.table-wrap, .md') || t")
            assert inside(box.bounding_box(), viewport), (name, box.bounding_box())
    assert page.watch.errors == [], page.watch.errors


@pytest.mark.parametrize("language", ["en", "fa"])
def test_the_chat_fits_a_phone_with_its_list_behind_a_button(live_asgi, open_page, data, language):
    page = open_page(language, phone=True)
    sign_in(page, live_asgi.url)
    page.goto(f"{live_asgi.url}/ai-chat/c/{data['conversation'].id}/")
    card = page.locator(".chat-main").bounding_box()
    assert inside(card, {"x": 0, "width": 390}), card
    for part in ("#chat-input", "#composer", "select[name=key]", "#chat-send", "input[name=model]"):
        assert inside(page.locator(part).bounding_box(), card), part
    # The reply's table and code scroll inside the reply.
    reply = page.locator("article.assistant").bounding_box()
    assert inside(reply, card), reply
    for wide in ("article.assistant table", "article.assistant pre"):
        assert inside(page.locator(wide).bounding_box(), reply), wide
        assert page.locator(wide).evaluate("e => e.scrollWidth > e.clientWidth"), wide

    # The conversation list is behind a button.
    conversations = page.locator("[data-action=conversations]")
    assert not page.locator("#conversation-list").is_visible()
    assert conversations.get_attribute("aria-expanded") == "false"
    conversations.click()
    page.locator("#conversation-list a", has_text="Wide things").wait_for()
    assert conversations.get_attribute("aria-expanded") == "true"
    assert overflow(page) <= 0
    screenshot(page, f"phone-{language}-chat-list-open")
    conversations.click()
    page.locator("#conversation-list").wait_for(state="hidden")
    assert page.watch.errors == [], page.watch.errors


@pytest.mark.parametrize("language", ["en", "fa"])
def test_the_desktop_keeps_the_sidebar_and_the_list_in_sight(live_asgi, open_page, data, language):
    page = open_page(language)
    sign_in(page, live_asgi.url)
    page.goto(f"{live_asgi.url}/ai-chat/c/{data['conversation'].id}/")
    assert page.locator(".sidebar").is_visible()
    assert page.locator("#conversation-list").is_visible()
    assert not page.locator("[data-action=menu]").is_visible()
    assert not page.locator("[data-action=conversations]").is_visible()
    assert overflow(page) <= 0
    screenshot(page, f"{language}-chat-wide")
    assert page.watch.errors == [], page.watch.errors
