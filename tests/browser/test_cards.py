"""#12.9 in real Chromium: an approval card keeps its true state across a reload, a query that
can never run is refused on its card, and the diff is red and green (by classes: strict CSP)."""

from __future__ import annotations

import json

import pytest

from ai_chat.models import Message
from tests.browser.conftest import screenshot
from tests.browser.test_flows import sign_in
from tests.conftest import make_key, user_with_permissions

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "readonly"])


@pytest.mark.parametrize(("language", "phone"), [("en", False), ("fa", True)])
def test_an_undone_card_shows_undone_after_a_reload_and_offers_no_undo(
    live_asgi, open_page, fake, workspace, language, phone
):
    user = user_with_permissions("olga", "run_query", "write_files")
    make_key(user, fake)
    page = open_page(language, phone)
    sign_in(page, live_asgi.url, "olga")
    page.goto(f"{live_asgi.url}/ai-chat/")
    page.fill("#chat-input", "[[tool:append]] add a function")
    page.keyboard.press("Enter")
    card = page.locator(".tool-card.pending")
    card.wait_for()
    # The added line is green, the hunk header is not: colours from the theme's classes.
    added = card.locator(".diff .add").first
    colours = added.evaluate(
        "e => [getComputedStyle(e).color, getComputedStyle(e.closest('pre')).color]"
    )
    assert colours[0] != colours[1], colours
    screenshot(page, f"{language}-chat-card-diff")
    card.locator("[data-tool-decision=approve]").click()
    page.locator(".tool-card.applied [data-undo-url]").click()
    undone = page.locator(".tool-card.undone[data-state=undone]")
    undone.wait_for()
    assert undone.locator("[data-undo-url]").count() == 0
    assert (workspace / "notes.md").read_text() == "# Notes\n"

    page.reload()
    page.locator(".tool-card.undone").wait_for()
    assert page.locator("[data-undo-url]").count() == 0
    assert page.locator(".tool-card.applied").count() == 0
    screenshot(page, f"{language}-chat-card-undone")
    assert page.watch.errors == [], page.watch.errors


@pytest.mark.parametrize(("language", "phone"), [("en", False), ("fa", True)])
def test_a_query_that_can_never_run_shows_its_refusal_and_no_run_button(
    live_asgi, open_page, fake, workspace, language, phone
):
    fake.custom_tool_call = {
        "id": "call_delete",
        "name": "run_query",
        "arguments": json.dumps({"code": "Message.objects.all().delete()"}),
    }
    user = user_with_permissions("olga", "run_query")
    make_key(user, fake)
    page = open_page(language, phone)
    sign_in(page, live_asgi.url, "olga")
    page.goto(f"{live_asgi.url}/ai-chat/")
    page.fill("#chat-input", "[[tool:custom]] clean up")
    page.keyboard.press("Enter")
    card = page.locator(".tool-card.refused")
    card.wait_for()
    assert "delete" in card.locator(".error").inner_text()
    assert card.locator("[data-tool-decision=approve]").count() == 0
    assert card.locator("[data-tool-decision=reject]").is_visible()
    screenshot(page, f"{language}-chat-card-refused")
    # Telling the assistant settles it; the messages were never touched.
    card.locator("[data-tool-decision=reject]").click()
    page.locator(".tool-card.failed").wait_for()
    assert Message.objects.filter(role="user", content__contains="clean up").exists()
    assert page.watch.errors == [], page.watch.errors
