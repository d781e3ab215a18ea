"""CONTRACT.md's chat hooks and the keyboard: data-message-id / data-role on every message, a
Copy of the whole message, the message box focused on opening, the conversation list as one tab
stop, and the shortcuts of the ? help."""

from __future__ import annotations

import pytest

from ai_chat.models import Conversation, Message
from tests.browser.conftest import screenshot
from tests.browser.test_flows import sign_in
from tests.conftest import make_key


def clipboard(page) -> str:
    return page.evaluate("navigator.clipboard.readText()")


def wait_for_clipboard(page, test: str, arg: str = "") -> None:
    """Wait until `test` (a JS expression over `text` and `arg`) holds for the clipboard. The
    predicate must answer synchronously (a promise would count as true), so it reads the
    clipboard in the background and tests the last text read."""
    page.evaluate("() => { window.__clip = undefined; }")
    page.wait_for_function(
        "([arg]) => { navigator.clipboard.readText().then((t) => { window.__clip = t; });"
        f" const text = window.__clip; return typeof text === 'string' && ({test}); }}",
        arg=[arg],
    )


@pytest.fixture
def conversations(alice, fake):
    make_key(alice, fake)
    made = []
    for n in range(3):
        conversation = Conversation.objects.create(owner=alice, title=f"Talk {n}")
        question = Message(conversation=conversation, role="user")
        question.set_content(f"Question {n}")
        question.save()
        reply = Message(conversation=conversation, role="assistant", model="gpt-4o-mini")
        reply.set_content(f"Answer {n}\n\n```python\nprint({n})\n```")
        reply.save()
        made.append(conversation)
    return made


@pytest.mark.parametrize("language", ["en", "fa"])
def test_every_message_carries_its_hooks_and_copies_whole(
    live_asgi, open_page, alice, fake, language
):
    make_key(alice, fake)
    page = open_page(language)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    sign_in(page, live_asgi.url)
    page.goto(f"{live_asgi.url}/ai-chat/")
    assert page.evaluate("document.activeElement.id") == "chat-input"
    page.keyboard.type("hello there")
    page.keyboard.press("Enter")
    page.wait_for_selector("article.assistant.complete")

    def hooks() -> list[tuple[str, str | None, int]]:
        return [
            tuple(found)
            for found in page.evaluate(
                "[...document.querySelectorAll('article.msg')].map(a =>"
                " [a.dataset.role, a.dataset.messageId || null,"
                "  a.querySelectorAll('[data-action=copy]').length])"
            )
        ]

    live = hooks()
    saved = list(
        Message.objects.filter(conversation__owner=alice).order_by("id").values_list("role", "id")
    )
    assert live == [(role, str(pk), 1) for role, pk in saved]
    assert page.locator("article[data-role=assistant] [data-action=regenerate]").count() == 1
    page.locator("article[data-role=user] [data-action=copy]").click()
    wait_for_clipboard(page, "text === 'hello there'")
    page.reload()
    assert hooks() == live
    assert page.evaluate("document.activeElement.id") == "chat-input"
    reply = Message.objects.get(conversation__owner=alice, role="assistant")
    page.locator("article[data-role=assistant] [data-action=copy]").click()
    wait_for_clipboard(page, "text.trim() === arg", reply.content.strip())
    assert "Copy" not in clipboard(page)
    assert page.watch.errors == [], page.watch.errors


def test_the_conversation_list_is_one_tab_stop(live_asgi, open_page, conversations):
    page = open_page("en")
    sign_in(page, live_asgi.url)
    current = conversations[1]
    page.goto(f"{live_asgi.url}/ai-chat/c/{current.id}/")
    page.focus(".chat-list input[type=search]")
    page.keyboard.press("Tab")
    # The tab stop is the open conversation; Tab once more leaves the list.
    assert page.evaluate("document.activeElement.textContent") == "Talk 1"
    page.keyboard.press("ArrowDown")
    focused = page.evaluate("document.activeElement.textContent")
    assert focused == "Talk 0", focused  # the list is newest first
    page.keyboard.press("Home")
    assert page.evaluate("document.activeElement.textContent") == "Talk 2"
    page.keyboard.press("Tab")
    assert not page.evaluate("!!document.activeElement.closest('#conversation-list')")
    page.keyboard.press("Shift+Tab")
    assert page.evaluate("document.activeElement.textContent") == "Talk 2"
    page.keyboard.press("Shift+Tab")
    assert page.evaluate("document.activeElement.type") == "search"
    assert page.watch.errors == [], page.watch.errors


@pytest.mark.parametrize(("language", "phone"), [("en", False), ("fa", True)])
def test_the_help_lists_shortcuts_that_work(live_asgi, open_page, conversations, language, phone):
    page = open_page(language, phone)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    sign_in(page, live_asgi.url)
    newest = conversations[2]
    page.goto(f"{live_asgi.url}/ai-chat/c/{newest.id}/")

    # ? opens the help (from outside a text field), Escape closes it; the button opens it too.
    page.evaluate("document.activeElement.blur()")
    page.keyboard.press("?" if language == "en" else "Shift+Slash")
    help_dialog = page.locator("#shortcuts")
    help_dialog.wait_for(state="visible")
    assert help_dialog.locator("kbd").count() >= 6
    screenshot(page, f"{'phone-' if phone else ''}{language}-chat-shortcuts")
    page.keyboard.press("Escape")
    help_dialog.wait_for(state="hidden")
    page.click("[data-action=help]")
    help_dialog.wait_for(state="visible")
    help_dialog.locator("form[method=dialog] button").click()
    help_dialog.wait_for(state="hidden")

    # C copies the last reply; / goes to the search; N opens a new chat.
    page.evaluate("document.activeElement.blur()")
    page.keyboard.press("c")
    wait_for_clipboard(page, "text.startsWith('Answer 2')")
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.type") == "search"
    page.evaluate("document.activeElement.blur()")
    page.keyboard.press("n")
    page.wait_for_url(f"{live_asgi.url}/ai-chat/")

    # From inside the message box, single keys type; Alt+Shift chords act.
    page.goto(f"{live_asgi.url}/ai-chat/c/{newest.id}/")
    page.focus("#chat-input")
    page.keyboard.type("n/c")
    assert page.input_value("#chat-input") == "n/c"
    page.evaluate("navigator.clipboard.writeText('')")
    page.keyboard.press("Alt+Shift+KeyC")
    wait_for_clipboard(page, "text.startsWith('Answer 2')")
    page.keyboard.press("Alt+Shift+KeyF")
    assert page.evaluate("document.activeElement.type") == "search"
    page.focus("#chat-input")
    page.keyboard.press("Alt+Shift+KeyN")
    page.wait_for_url(f"{live_asgi.url}/ai-chat/")
    assert page.watch.errors == [], page.watch.errors


@pytest.mark.parametrize(("language", "phone"), [("en", False), ("fa", True)])
def test_escape_stops_a_reply_as_the_stop_button_does(
    live_asgi, open_page, alice, fake, language, phone
):
    from ai_chat.models import Status
    from tests.browser.test_flows import wait_until

    make_key(alice, fake)
    fake.word_delay = 0.05
    page = open_page(language, phone)
    sign_in(page, live_asgi.url)
    page.goto(f"{live_asgi.url}/ai-chat/")
    page.fill("#chat-input", "[[long]]")
    page.click("#chat-send")
    growing = (
        "(n) => (document.querySelector('article.assistant .body') || {}).textContent?.length > n"
    )
    page.wait_for_function(growing, arg=20)
    assert page.is_visible("[data-action=stop]")

    # An Escape that closes something first leaves the reply going: the help dialog, and on a
    # phone the drawer.
    page.click("[data-action=help]")
    page.keyboard.press("Escape")
    page.locator("#shortcuts").wait_for(state="hidden")
    if phone:
        page.click("[data-action=menu]")
        page.keyboard.press("Escape")
        assert page.get_attribute("[data-action=menu]", "aria-expanded") == "false"
    length = page.evaluate("document.querySelector('article.assistant .body').textContent.length")
    page.wait_for_function(growing, arg=length)
    assert page.locator("article.assistant.stopped").count() == 0

    # Escape, from the message box, stops it: the reply is saved as stopped with what arrived.
    page.focus("#chat-input")
    page.keyboard.press("Escape")
    page.wait_for_selector("article.assistant.stopped")
    assert not page.is_visible("[data-action=stop]")
    stopped = wait_until(
        lambda: Message.objects.filter(conversation__owner=alice, status=Status.STOPPED).first()
    )
    assert stopped.content.startswith("word0")
    assert fake.disconnected.wait(5)
    screenshot(page, f"{'phone-' if phone else ''}{language}-chat-escape-stopped")
    assert page.watch.errors == [], page.watch.errors
