"""The main flows in real headless Chromium against the panel served over ASGI."""

from __future__ import annotations

import time

import pytest

from ai_chat.models import Conversation, Message, Status
from api_manager.models import ProviderKey
from tests.browser.conftest import screenshot
from tests.conftest import OPENAI_SECRET, PASSWORD, make_key, user_with_permissions


def sign_in(page, base: str, username: str = "alice") -> None:
    page.goto(f"{base}/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")


def reply_length(page) -> int:
    return page.evaluate(
        "(document.querySelector('article.assistant:last-of-type .body') || {}).textContent?.length || 0"
    )


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05):
    """Poll `predicate` (a database state, written by the server's threads: there is no event
    to wait on) until it is truthy; page states are waited for with Playwright instead."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def test_the_whole_flow_from_sign_in_to_deleting_the_key(live_asgi, page, alice, fake):
    base = live_asgi.url
    fake.word_delay = 0.03
    sign_in(page, base)
    screenshot(page, "en-dashboard-empty")

    # Add a key through the multi-step wizard, testing it against the fake provider.
    page.goto(f"{base}/api-manager/settings/")
    assert page.is_visible("[data-step='1']")
    assert not page.is_visible("[data-step='2']")
    page.check("input[name=provider][value=openai]")
    page.click("[data-step='1'] [data-next]")
    page.fill("#id_label", "Browser key")
    page.fill("#id_api_key", OPENAI_SECRET)
    page.fill("#id_base_url", fake.openai_url)
    page.fill("#id_default_model", "gpt-4o-mini")
    screenshot(page, "en-keys-wizard-key")
    page.click("[data-step='2'] [data-next]")
    page.click("[data-check]")
    page.locator("[data-check-result]", has_text="gpt-4o-mini").wait_for()
    screenshot(page, "en-keys-wizard-tested")
    page.click("[data-step='3'] button[type=submit]")
    page.locator(".flash", has_text="Browser key").wait_for()
    key = ProviderKey.objects.get(label="Browser key")
    assert OPENAI_SECRET not in page.content()

    # Test it from its row.
    row = page.locator(f"[data-key-id='{key.id}']")
    row.locator("[data-test-url]").click()
    row.locator("[data-test-result]", has_text="gpt-4o-mini").wait_for()
    screenshot(page, "en-keys")

    # Chat: the reply grows word by word.
    fake.long_words = 60
    page.goto(f"{base}/ai-chat/")
    # The page records the reply's length at every change, instead of the test sampling it.
    page.evaluate(
        """() => { window.__lengths = []; new MutationObserver(() => {
          const body = document.querySelector('article.assistant:last-of-type .body');
          if (body) window.__lengths.push(body.textContent.length);
        }).observe(document.getElementById('messages'),
                   { subtree: true, childList: true, characterData: true }); }"""
    )
    page.fill("#chat-input", "[[long]] please")
    page.keyboard.press("Enter")
    page.wait_for_selector("article.assistant.complete")
    lengths: list[int] = page.evaluate("window.__lengths")
    growth = [b for a, b in zip(lengths, lengths[1:], strict=False) if b > a]
    assert len(growth) >= 3, lengths
    assert "/ai-chat/c/" in page.url
    conversation = Conversation.objects.get(owner=alice)
    screenshot(page, "en-chat")

    # Stop in the middle of a long reply: the partial text stays.
    fake.long_words = 400
    page.fill("#chat-input", "[[long]] again")
    page.keyboard.press("Enter")
    page.wait_for_function(
        "() => (document.querySelector('article.assistant:last-of-type .body') || {})"
        ".textContent?.length > 40"
    )
    page.click("#chat-stop")
    page.wait_for_selector("article.assistant.stopped")
    partial = reply_length(page)
    stopped = wait_until(
        lambda: Message.objects.filter(conversation=conversation, status=Status.STOPPED).first()
    )
    assert stopped.content.startswith("word0")
    assert fake.disconnected.wait(2)
    # The provider's stream is closed and the reply saved: nothing more can come, and the
    # partial text is still what the page showed at Stop.
    assert reply_length(page) == partial > 0

    # Regenerate the stopped reply.
    fake.long_words = 20
    page.click("[data-regenerate]")
    page.wait_for_selector("article.assistant.complete >> nth=1")
    # Changed on purpose (issue #11): the earlier reply stays, as version 1 of 2, hidden.
    wait_until(lambda: Message.objects.filter(pk=stopped.pk, active=False, versions=2).exists())

    # Rename, then delete the conversation.
    page.reload()
    page.click(".rename summary")
    page.fill(".rename input[name=title]", "Renamed in the browser")
    page.click(".rename button[type=submit]")
    page.locator("#chat-title", has_text="Renamed in the browser").wait_for()
    page.click(".chat-head button.danger")
    page.wait_for_url(f"{base}/ai-chat/")
    assert not Conversation.objects.exists()

    # Persian: the layout flips to the right.
    page.click(".sidebar .lang-switch button[value=fa]")
    page.wait_for_load_state()
    assert page.get_attribute("html", "dir") == "rtl"
    assert page.get_attribute("html", "lang") == "fa"
    box = page.locator(".sidebar").bounding_box()
    assert box["x"] > 1280 / 2, box
    assert "گفت‌وگوی تازه" in page.inner_text("main")
    # No English left in the interface (this page holds no user or model text now).
    text = page.inner_text("body")
    for english in (
        "Dashboard",
        "Chat",
        "API keys",
        "Sign out",
        "New chat",
        "Send",
        "System prompt",
        "Search",
        "Ask anything",
    ):
        assert english not in text, english
    screenshot(page, "fa-chat")

    # Disable and delete the key (the confirmation dialog is accepted).
    page.goto(f"{base}/api-manager/settings/")
    row = page.locator(f"[data-key-id='{key.id}']")
    row.locator("form[action$='/toggle/'] button").click()
    page.wait_for_load_state()
    key.refresh_from_db()
    assert not key.is_active
    page.locator(f"[data-key-id='{key.id}'] form[action$='/delete/'] button").click()
    page.wait_for_load_state()
    assert not ProviderKey.objects.filter(pk=key.pk).exists()

    assert page.watch.errors == [], page.watch.errors


def test_a_reply_carrying_html_payloads_runs_nothing(live_asgi, page, alice, fake):
    make_key(alice, fake)
    sign_in(page, live_asgi.url)
    page.goto(f"{live_asgi.url}/ai-chat/")
    page.fill("#chat-input", "[[xss]]")
    page.keyboard.press("Enter")
    page.wait_for_selector("article.assistant.complete")
    assert page.evaluate("window.__xss") is None
    # Clicking the would-be javascript: link does nothing either.
    for link in page.locator("article.assistant a").all():
        assert not (link.get_attribute("href") or "").startswith("javascript:")
    page.reload()
    assert page.evaluate("window.__xss") is None
    assert "window.__xss" in page.inner_text("article.assistant")
    assert page.watch.errors == [], page.watch.errors


def test_the_csp_is_active_and_no_page_has_console_errors(live_asgi, page, alice, fake):
    make_key(alice, fake, label="Screenshot key")
    conversation = Conversation.objects.create(owner=alice, title="A conversation with code")
    user_message = Message(conversation=conversation, role="user")
    user_message.set_content("Show me Python, please. سلام!")
    user_message.save()
    reply = Message(conversation=conversation, role="assistant", model="gpt-4o-mini")
    reply.set_content(
        "این یک پاسخ **فارسی** است with English.\n\n```python\ndef hello():\n    return 'world'\n```"
    )
    reply.save()
    sign_in(page, live_asgi.url)
    # An inline script injected into the page is refused by the policy.
    page.evaluate(
        "() => { const s = document.createElement('script'); s.textContent = 'window.__inline = 1'; document.body.appendChild(s); }"
    )
    assert page.evaluate("window.__inline") is None
    assert page.watch.csp_violations(), "the CSP did not refuse an inline script"
    page.watch.errors.clear()

    paths = {
        "dashboard": "/",
        "chat": f"/ai-chat/c/{conversation.id}/",
        "keys": "/api-manager/settings/",
        "usage": f"/api-manager/keys/{alice.provider_keys.get().id}/usage/",
    }
    for language in ("en", "fa"):
        page.goto(f"{live_asgi.url}/")
        page.click(f".sidebar .lang-switch button[value={language}]")
        page.wait_for_load_state()
        for name, path in paths.items():
            page.goto(live_asgi.url + path)
            page.wait_for_load_state("networkidle")
            assert page.get_attribute("html", "dir") == ("rtl" if language == "fa" else "ltr")
            screenshot(page, f"{language}-{name}")
            if name == "chat":
                # Code stays left to right, in a right-to-left page too.
                assert page.eval_on_selector("pre", "el => getComputedStyle(el).direction") == "ltr"
                assert page.is_visible("pre .copy-btn")
    assert page.watch.errors == [], page.watch.errors


# Queries run on the read-only alias (a second connection to the test database).
@pytest.mark.django_db(transaction=True, databases=["default", "readonly"])
def test_the_assistant_proposes_an_action_and_runs_it_only_after_approval(
    live_asgi, page, fake, tmp_path, settings
):
    from ai_chat.models import ActionLog

    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "notes.md").write_text("# Notes\n")
    settings.FILE_ACTIONS_ROOT = str(workspace)
    user = user_with_permissions("olga", "run_query", "write_files")
    make_key(user, fake)
    sign_in(page, live_asgi.url, "olga")
    page.goto(f"{live_asgi.url}/ai-chat/")

    page.fill("#chat-input", "[[tool:query]] how many messages per conversation?")
    page.keyboard.press("Enter")
    card = page.locator(".tool-card.pending")
    card.wait_for()
    assert "Message.objects.filter" in card.inner_text()
    assert not ActionLog.objects.exists()
    card.locator("[data-tool-decision=approve]").click()
    page.locator(".tool-card.done table.result").wait_for()
    page.locator("article.assistant.complete", has_text="The tool returned").wait_for()
    screenshot(page, "en-chat-query-card")

    page.fill("#chat-input", "[[tool:append]] add a function")
    page.keyboard.press("Enter")
    card = page.locator(".tool-card.pending")
    card.wait_for()
    assert "+def added():" in card.inner_text()
    assert (workspace / "notes.md").read_text() == "# Notes\n"
    card.locator("[data-tool-decision=approve]").click()
    page.locator(".tool-card.applied").wait_for()
    assert "def added()" in (workspace / "notes.md").read_text()
    page.locator(".tool-card.applied [data-undo-url]").click()
    page.locator(".tool-card.undone").wait_for()
    assert page.locator("[data-undo-url]").count() == 0
    assert (workspace / "notes.md").read_text() == "# Notes\n"
    assert page.watch.errors == [], page.watch.errors


def test_the_layout_works_on_a_phone(live_asgi, chromium, alice, fake):
    make_key(alice, fake)
    context = chromium.new_context(
        viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
    )
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    try:
        sign_in(page, live_asgi.url)
        for language in ("en", "fa"):
            page.goto(f"{live_asgi.url}/")
            page.click("[data-action=menu]")
            page.click(f".sidebar .lang-switch button[value={language}]")
            page.wait_for_load_state()
            for name, path in (("dashboard", "/"), ("chat", "/ai-chat/")):
                page.goto(live_asgi.url + path)
                # The sidebar folds behind the menu button; nothing scrolls sideways.
                assert not page.is_visible(".sidebar")
                assert page.is_visible("[data-action=menu]")
                width = page.evaluate("document.documentElement.scrollWidth")
                assert width <= 390, (language, name, width)
                screenshot(page, f"phone-{language}-{name}")
            page.click("[data-action=menu]")
            assert page.is_visible(".sidebar .nav")
        assert errors == [], errors
    finally:
        context.close()
