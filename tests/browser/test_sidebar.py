"""The sidebar in real Chromium, in both languages (Persian on the phone): pin, rename and
delete from a conversation's menu (delete asks first), and the half-space search."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from ai_chat.models import Conversation, Message, Role
from tests.browser.conftest import screenshot
from tests.browser.test_flows import sign_in
from tests.conftest import make_key


def make(owner, title, minutes_ago, text=""):
    c = Conversation.objects.create(
        owner=owner, title=title, updated_at=timezone.now() - dt.timedelta(minutes=minutes_ago)
    )
    if text:
        m = Message(conversation=c, role=Role.USER)
        m.set_content(text)
        m.save()
    return c


@pytest.mark.parametrize(("language", "phone"), [("en", False), ("fa", True)])
def test_pin_rename_delete_and_search_from_the_sidebar(
    live_asgi, open_page, alice, language, phone
):
    old = make(alice, "Old plan", 600, text="می‌خواهم بروم")
    make(alice, "Newer chat", 5)
    doomed = make(alice, "Doomed chat", 10)
    page = open_page(language, phone)
    dialogs: list[str] = []
    page.on("dialog", lambda d: dialogs.append(d.message))
    sign_in(page, live_asgi.url)
    page.goto(f"{live_asgi.url}/ai-chat/")
    if phone:
        page.click("[data-action=conversations]")

    # Pin the oldest: it moves to the top, marked.
    item = page.locator(f"#conversation-list li[data-conversation-id='{old.id}']")
    item.locator(".item-menu summary").click()
    item.locator("[data-action=pin]").click()
    page.wait_for_load_state()
    if phone:
        page.click("[data-action=conversations]")
    first = page.locator("#conversation-list > li").first
    assert first.get_attribute("data-conversation-id") == str(old.id)
    assert "pinned" in first.get_attribute("class")
    screenshot(page, f"{language}-sidebar-pinned")
    if not phone:
        # From the keyboard: Shift+F10 on a conversation opens its menu, focus on its first
        # action (the list stays one tab stop).
        first.locator("a").focus()
        page.keyboard.press("Shift+F10")
        assert first.locator(".item-menu").get_attribute("open") is not None
        assert page.evaluate("document.activeElement.dataset.action") == "pin"
        page.keyboard.press("Escape")

    # Rename another one from its menu.
    item = page.locator(f"#conversation-list li[data-conversation-id='{doomed.id}']")
    item.locator(".item-menu summary").click()
    item.locator("input[name=title]").fill("Renamed in the list")
    item.locator("[data-action=rename]").click()
    page.wait_for_load_state()
    doomed.refresh_from_db()
    assert doomed.title == "Renamed in the list"

    # Delete it from its menu: the browser asks first.
    page.goto(f"{live_asgi.url}/ai-chat/")
    if phone:
        page.click("[data-action=conversations]")
    item = page.locator(f"#conversation-list li[data-conversation-id='{doomed.id}']")
    item.locator(".item-menu summary").click()
    item.locator("[data-action=delete]").click()
    page.wait_for_load_state()
    assert len(dialogs) == 1
    assert not Conversation.objects.filter(pk=doomed.id).exists()

    # Search with a plain space finds the message written with a half-space.
    page.goto(f"{live_asgi.url}/ai-chat/?q=" + "می خواهم")
    if phone:
        page.click("[data-action=conversations]")
    links = page.locator("#conversation-list li > a")
    assert links.count() == 1
    assert "Old plan" in links.first.inner_text()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= (390 if phone else 1280)
    screenshot(page, f"{language}-sidebar-search")
    assert page.watch.errors == [], page.watch.errors


@pytest.mark.parametrize("language", ["en", "fa"])
def test_one_menu_serves_every_row_from_the_keyboard(live_asgi, open_page, alice, language):
    """The page renders the menu once; the menu key or Shift+F10 on a conversation opens it in
    that row, filled with the row's address, title and pinned state; Esc closes it and the focus
    goes back to the conversation; pin, rename and delete work through it."""
    old = make(alice, "Old plan", 600)
    current = make(alice, "Current talk", 5)
    other = make(alice, "برنامه‌ی دیگر", 10)
    page = open_page(language)
    dialogs: list[str] = []
    page.on("dialog", lambda d: dialogs.append(d.message))
    sign_in(page, live_asgi.url)
    page.goto(f"{live_asgi.url}/ai-chat/c/{current.id}/")
    assert page.locator(".item-menu-body").count() == 0  # none until one is opened
    assert page.locator("#conversation-list .item-menu").count() == 3  # a ⋯ per row

    def row(conversation):
        return page.locator(f"#conversation-list li[data-conversation-id='{conversation.id}']")

    def focused():
        return page.evaluate("document.activeElement.dataset.action || document.activeElement.name")

    # Shift+F10 opens the old conversation's menu in its row, the focus on Pin.
    row(old).locator("a").focus()
    page.keyboard.press("Shift+F10")
    assert row(old).locator(".item-menu").get_attribute("open") is not None
    assert row(old).locator(".item-menu-body").count() == 1
    assert focused() == "pin"
    assert row(old).locator("input[name=title]").input_value() == "Old plan"
    screenshot(page, f"{language}-sidebar-menu-open")
    # Esc closes it; the focus is back on the conversation.
    page.keyboard.press("Escape")
    assert row(old).locator(".item-menu").get_attribute("open") is None
    assert page.evaluate("document.activeElement.textContent") == "Old plan"

    # The menu key opens it again; Enter on Pin pins it and comes back to this page.
    page.keyboard.press("ContextMenu")
    assert focused() == "pin"
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.url == f"{live_asgi.url}/ai-chat/c/{current.id}/"
    old.refresh_from_db()
    assert old.pinned
    first = page.locator("#conversation-list > li").first
    assert first.get_attribute("data-conversation-id") == str(old.id)
    # Opened again, the same row's menu now offers Unpin.
    first.locator("a").focus()
    page.keyboard.press("Shift+F10")
    assert first.locator("input[name=pinned]").input_value() == "0"
    page.keyboard.press("Escape")

    # Another row: the one menu moves there, with that row's title; rename it by the keyboard.
    row(other).locator("a").focus()
    page.keyboard.press("Shift+F10")
    assert page.locator(".item-menu-body").count() == 1
    assert row(other).locator(".item-menu-body").count() == 1
    assert page.locator("#conversation-list .item-menu[open]").count() == 1
    page.keyboard.press("Tab")
    assert focused() == "title"
    assert row(other).locator("input[name=title]").input_value() == "برنامه‌ی دیگر"
    page.keyboard.press("ControlOrMeta+A")
    page.keyboard.type("Renamed by keyboard")
    page.keyboard.press("Enter")
    page.wait_for_url(f"{live_asgi.url}/ai-chat/c/{other.id}/")
    other.refresh_from_db()
    assert other.title == "Renamed by keyboard"

    # Delete it from its menu: the browser asks first.
    row(other).locator("a").focus()
    page.keyboard.press("Shift+F10")
    for _ in range(3):  # Pin, the title, Rename, then Delete
        page.keyboard.press("Tab")
    assert focused() == "delete"
    page.keyboard.press("Enter")
    page.wait_for_url(f"{live_asgi.url}/ai-chat/")
    assert len(dialogs) == 1
    assert not Conversation.objects.filter(pk=other.id).exists()
    assert page.watch.errors == [], page.watch.errors


def test_without_javascript_an_open_conversation_is_pinned_renamed_and_deleted_in_its_header(
    live_asgi, chromium, alice
):
    """The rows' menus need the script; without it the header of an open conversation keeps
    Pin, Rename and Delete (Delete does not ask: the question is the script's)."""
    c = make(alice, "Plain page", 5)
    make(alice, "Another", 10)
    context = chromium.new_context(
        java_script_enabled=False, viewport={"width": 1280, "height": 860}
    )
    try:
        page = context.new_page()
        page.set_default_timeout(15000)
        sign_in(page, live_asgi.url)
        page.goto(f"{live_asgi.url}/ai-chat/c/{c.id}/")
        assert page.locator("#conversation-list .item-menu").count() == 0
        head = page.locator(".chat-head")
        head.locator("[data-action=pin]").click()
        page.wait_for_load_state()
        c.refresh_from_db()
        assert c.pinned
        assert head.locator("[data-action=pin]").inner_text() == "Unpin"
        screenshot(page, "en-no-script-conversation")
        head.locator("details.rename summary").click()
        head.locator("input[name=title]").fill("Renamed without script")
        head.locator("details.rename button[type=submit]").click()
        page.wait_for_url(f"{live_asgi.url}/ai-chat/c/{c.id}/")
        c.refresh_from_db()
        assert c.title == "Renamed without script"
        head.locator("button.danger").click()
        page.wait_for_url(f"{live_asgi.url}/ai-chat/")
        assert not Conversation.objects.filter(pk=c.id).exists()
    finally:
        context.close()


def test_a_conversation_started_on_the_page_gets_its_menu(live_asgi, open_page, alice, fake):
    """The first reply adds the new conversation to the list: its menu works at once."""
    make_key(alice, fake)
    make(alice, "Older", 60)
    page = open_page("en")
    sign_in(page, live_asgi.url)
    page.goto(f"{live_asgi.url}/ai-chat/")
    page.fill("#chat-input", "A fresh question")
    page.keyboard.press("Enter")
    page.wait_for_selector("article.assistant.complete")
    new = Conversation.objects.exclude(title="Older").get()
    first = page.locator("#conversation-list > li").first
    assert first.get_attribute("data-conversation-id") == str(new.id)
    first.locator("a").focus()
    page.keyboard.press("Shift+F10")
    assert first.locator("form:has([data-action=pin])").get_attribute("action") == (
        f"/ai-chat/c/{new.id}/pin/"
    )
    assert first.locator("input[name=title]").input_value() == "A fresh question"
    with page.expect_navigation():
        page.keyboard.press("Enter")
    new.refresh_from_db()
    assert new.pinned
    assert page.url == f"{live_asgi.url}/ai-chat/c/{new.id}/"  # where the page had moved to
    assert page.watch.errors == [], page.watch.errors
