"""The chat's Edit control, Stop for a reply followed after a reload, attachments kept or removed
on an edit, and byte-accurate upload progress, in real Chromium (English and Persian, desktop
and a 390×844 phone)."""

from __future__ import annotations

import pytest
from django.utils import translation
from django.utils.translation import gettext

from ai_chat.models import Attachment, Message, Status
from tests.browser.conftest import screenshot
from tests.browser.test_flows import sign_in, wait_until
from tests.conftest import make_key

DIGITS = str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹")


def counter(language: str, k: int, n: int) -> str:
    text = f"{k} / {n}"
    return text.translate(DIGITS) if language == "fa" else text


def ask(page, text: str) -> None:
    """Send `text` from the composer and wait for its reply to be done."""
    done = page.locator("article.assistant.complete").count()
    page.fill("#chat-input", text)
    page.keyboard.press("Enter")
    page.wait_for_function(
        "(n) => document.querySelectorAll('article.assistant.complete').length > n", arg=done
    )


def thread(page) -> list[tuple[str, str]]:
    """The messages shown: (role, text)."""
    shown = page.evaluate(
        "Array.from(document.querySelectorAll('#messages article.msg'))"
        ".filter((a) => !a.hidden)"
        ".map((a) => [a.dataset.role, a.querySelector('.body').textContent.trim()])"
    )
    return [tuple(pair) for pair in shown]


def in_language(language: str, text: str) -> str:
    with translation.override(language):
        return gettext(text)


@pytest.mark.parametrize(
    ("language", "phone"), [("en", False), ("fa", False), ("en", True), ("fa", True)]
)
def test_edit_sends_a_new_version_and_the_old_branch_stays(
    live_asgi, open_page, alice, fake, language, phone
):
    make_key(alice, fake)
    page = open_page(language, phone)
    sign_in(page, live_asgi.url)
    page.goto(f"{live_asgi.url}/ai-chat/")
    ask(page, "first question")
    ask(page, "second question")
    first = page.locator("article[data-role=user]").first

    # Esc cancels: the message is as it was.
    first.locator("[data-action=edit]").click()
    editor = first.locator(".msg-editor textarea")
    assert editor.get_attribute("dir") == "auto"
    assert editor.evaluate("(e) => e === document.activeElement")
    assert editor.input_value() == "first question"
    page.keyboard.type(" and more")
    page.keyboard.press("Escape")
    assert first.locator(".msg-editor").count() == 0
    assert first.locator(".body").inner_text() == "first question"

    # An empty edit is refused in plain words, and nothing is lost.
    first.locator("[data-action=edit]").click()
    editor.fill("   ")
    page.keyboard.press("Enter")
    alert = page.locator("#chat-alert")
    alert.wait_for()
    assert alert.inner_text() == in_language(
        language, "Write a message first: an empty edit is not sent."
    )
    assert len(thread(page)) == 4 and Message.objects.count() == 4

    # Shift+Enter breaks the line; Enter sends the edit, which streams its reply like a send.
    editor.fill("first, edited")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("on two lines")
    page.keyboard.press("Enter")
    versions = page.locator("article[data-role=user] [data-versions]")
    versions.wait_for()
    assert versions.inner_text() == counter(language, 2, 2)
    assert thread(page) == [
        ("user", "first, edited\non two lines"),
        ("assistant", "Hello! You said: first, edited\non two lines"),
    ]
    assert not alert.is_visible()
    page.wait_for_selector("article.assistant.complete [data-action=regenerate]")
    screenshot(page, f"{'phone-' if phone else ''}{language}-chat-edit-new-version")
    if phone:
        assert page.evaluate("document.documentElement.scrollWidth") <= 390

    # The previous version shows the old branch, intact.
    page.locator("article[data-role=user] [data-action=prev-version]").click()
    page.wait_for_function(
        "(t) => document.querySelector('article[data-role=user] [data-versions]')"
        "?.textContent === t",
        arg=counter(language, 1, 2),
    )
    assert [text for _, text in thread(page)] == [
        "first question",
        "Hello! You said: first question",
        "second question",
        "Hello! You said: second question",
    ]
    screenshot(page, f"{'phone-' if phone else ''}{language}-chat-edit-old-version")
    assert page.watch.errors == [], page.watch.errors


@pytest.mark.parametrize("language", ["en", "fa"])
def test_a_refused_edit_shows_why_and_keeps_the_text(
    live_asgi, open_page, alice, fake, settings, language
):
    make_key(alice, fake)
    page = open_page(language)
    sign_in(page, live_asgi.url)
    page.goto(f"{live_asgi.url}/ai-chat/")
    ask(page, "short")
    settings.CHAT_MAX_MESSAGE_CHARS = 20
    page.locator("article[data-role=user] [data-action=edit]").click()
    long_text = "this edit is much too long to send"
    page.fill("article[data-role=user] .msg-editor textarea", long_text)
    page.keyboard.press("Enter")
    alert = page.locator("#chat-alert")
    alert.wait_for()
    assert "20" in alert.inner_text().translate(str.maketrans("۰۱۲۳۴۵۶۷۸۹", "0123456789"))
    editor = page.locator("article[data-role=user] .msg-editor textarea")
    assert editor.input_value() == long_text
    assert editor.evaluate("(e) => e === document.activeElement")
    # The old branch is still shown, and nothing was saved.
    assert [text for _, text in thread(page)] == ["short", "Hello! You said: short"]
    assert Message.objects.count() == 2
    screenshot(page, f"{language}-chat-edit-refused")
    errors = [e for e in page.watch.errors if "413" not in e]
    assert errors == [], errors


@pytest.mark.parametrize(("how", "language"), [("button", "en"), ("escape", "fa")])
def test_stop_works_for_a_reply_followed_after_a_reload(
    live_asgi, open_page, alice, fake, how, language
):
    make_key(alice, fake)
    fake.word_delay = 0.05
    page = open_page(language)
    sign_in(page, live_asgi.url)
    page.goto(f"{live_asgi.url}/ai-chat/")
    page.fill("#chat-input", "[[long]]")
    page.keyboard.press("Enter")
    growing = (
        "(n) => (document.querySelector('article.assistant .body') || {}).textContent?.length > n"
    )
    page.wait_for_function(growing, arg=20)
    reply = wait_until(lambda: Message.objects.filter(role="assistant").first())

    # The page opens again while the reply is generated: replies.js follows it, with Stop.
    page.reload()
    article = page.locator(f"article[data-message-id='{reply.pk}']")
    article.wait_for()
    page.wait_for_function(growing, arg=40)
    stop = page.locator("[data-action=stop]")
    assert stop.is_visible()
    if how == "button":
        stop.click()
    else:
        page.focus("#chat-input")
        page.keyboard.press("Escape")
    page.wait_for_selector(f"article.assistant.stopped[data-message-id='{reply.pk}']")
    assert not stop.is_visible()
    page.locator(f"article[data-message-id='{reply.pk}'] [data-action=regenerate]").wait_for()
    saved = wait_until(lambda: Message.objects.filter(pk=reply.pk, status=Status.STOPPED).first())
    assert saved.content.startswith("word0") and len(saved.content.split()) < fake.long_words
    screenshot(page, f"{language}-chat-stop-after-reload-{how}")
    assert page.watch.errors == [], page.watch.errors


def test_stop_goes_when_a_followed_reply_ends_by_itself(live_asgi, open_page, alice, fake):
    make_key(alice, fake)
    fake.word_delay = 0.03
    fake.long_words = 300  # about 9 seconds: the reload lands while it is generated
    page = open_page("en")
    sign_in(page, live_asgi.url)
    page.goto(f"{live_asgi.url}/ai-chat/")
    page.fill("#chat-input", "[[long]]")
    page.keyboard.press("Enter")
    page.wait_for_function(
        "() => (document.querySelector('article.assistant .body') || {}).textContent?.length > 20"
    )
    page.reload()
    page.locator("article.assistant.streaming").wait_for()
    assert page.locator("[data-action=stop]").is_visible()
    page.wait_for_selector("article.assistant.complete", timeout=40000)
    assert not page.locator("[data-action=stop]").is_visible()
    # Escape, with nothing generating, stops nothing and breaks nothing.
    page.keyboard.press("Escape")
    assert page.watch.errors == [], page.watch.errors


@pytest.mark.parametrize(("provider", "language"), [("openai", "en"), ("anthropic", "fa")])
def test_an_edit_keeps_one_attachment_and_removes_another(
    live_asgi, open_page, alice, fake, tmp_path, settings, provider, language
):
    from tests.attachments import files

    settings.MEDIA_ROOT = tmp_path / "media"
    make_key(alice, fake, provider=provider)
    picture = tmp_path / "cat.png"
    picture.write_bytes(files.png())
    notes = tmp_path / "notes.txt"
    notes.write_text("remember the milk\n")
    page = open_page(language)
    sign_in(page, live_asgi.url)
    page.goto(f"{live_asgi.url}/ai-chat/")
    page.set_input_files("#attach-input", [str(picture), str(notes)])
    page.locator("#attach-chips [data-attachment-chip]").nth(1).wait_for()
    ask(page, "Look at these")
    # After the reply, the thread as the server renders it: the files carry their ids.
    user = page.locator("article[data-role=user]")
    user.locator("[data-attachment-id]").nth(1).wait_for()

    user.locator("[data-action=edit]").click()
    chips = user.locator(".msg-editor [data-attachment-id]")
    assert chips.count() == 2
    screenshot(page, f"{language}-chat-edit-attachments")
    user.locator(".msg-editor [data-attachment-id]", has_text="notes.txt").locator(
        "[data-action=remove-attachment]"
    ).click()
    assert chips.count() == 1
    fake.parts.clear()
    requests = len(fake.requests)
    page.fill("article[data-role=user] .msg-editor textarea", "Only the picture")
    page.keyboard.press("Enter")
    page.locator("article[data-role=user] [data-versions]").wait_for()

    # The provider saw exactly the kept picture, in its own format, and not the removed file.
    assert len(fake.requests) == requests + 1
    assert [(p.kind, p.media_type, p.flavour) for p in fake.parts] == [
        ("image", "image/png", provider)
    ]
    assert "remember the milk" not in str(fake.requests[-1].body["messages"])
    shown = page.locator("article[data-role=user] .attachments [data-attachment-id]")
    assert shown.count() == 1 and "cat.png" in shown.inner_text()
    new = Message.objects.get(role="user", version=2)
    assert [a.name for a in Attachment.objects.filter(message=new)] == ["cat.png"]
    screenshot(page, f"{language}-chat-edit-attachment-kept")
    assert page.watch.errors == [], page.watch.errors


@pytest.mark.parametrize("language", ["en", "fa"])
def test_upload_progress_counts_the_bytes_before_the_reply(
    live_asgi, open_page, alice, fake, tmp_path, settings, language
):
    settings.MEDIA_ROOT = tmp_path / "media"
    make_key(alice, fake)
    big = tmp_path / "big.log"
    big.write_bytes(b"a line of a large log file\n" * 150_000)  # about 4 MB
    page = open_page(language)
    sign_in(page, live_asgi.url)
    page.goto(f"{live_asgi.url}/ai-chat/")
    # Uploads on loopback are instant: throttle them to 2 MB/s (Chromium's DevTools throttling).
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 2_000_000},
    )
    page.set_input_files("#attach-input", str(big))
    page.locator("#attach-chips [data-attachment-chip]").wait_for()
    # Every value the progress bar shows, and whether the reply had started then.
    page.evaluate(
        """() => {
          window.__progress = [];
          const bar = document.getElementById('attach-progress');
          new MutationObserver(() => {
            const now = bar.getAttribute('aria-valuenow');
            if (now === null) return;
            const reply = document.querySelector('article.assistant .body');
            window.__progress.push({
              now: Number(now), value: bar.value, visible: bar.offsetParent !== null,
              label: document.getElementById('attach-percent').textContent,
              replied: !!(reply && reply.textContent.length),
            });
          }).observe(bar, { attributes: true, attributeFilter: ['aria-valuenow'] });
        }"""
    )
    # A short scripted answer: the fake's usual echo of a 4 MB log (cut to the context
    # budget) would stream for longer than the test waits.
    fake.scripted_reply = "The log repeats one line."
    page.fill("#chat-input", "[[scripted]] What went wrong?")
    page.keyboard.press("Enter")
    page.wait_for_function(
        "() => window.__progress.some((p) => p.now > 0 && p.now < 100 && p.visible)"
    )
    screenshot(page, f"{language}-chat-upload-progress")
    page.wait_for_selector("article.assistant.complete", timeout=30000)
    seen = page.evaluate("window.__progress")
    between = [p for p in seen if 0 < p["now"] < 100]
    assert len(between) >= 3, seen
    assert all(not p["replied"] and p["visible"] for p in between), seen
    assert all(p["value"] == p["now"] for p in seen)
    assert [p["now"] for p in seen] == sorted(p["now"] for p in seen)
    if language == "fa":
        assert any(ch in "۰۱۲۳۴۵۶۷۸۹" for ch in between[0]["label"]), between[0]
    # The upload is over: the bar goes; the reply arrived through the same stream handling.
    assert not page.locator("#attach-progress").is_visible()
    reply = page.locator("article.assistant.complete .body").inner_text()
    assert reply == "The log repeats one line."
    assert "[File: big.log]" in str(fake.requests[-1].body["messages"])
    assert page.locator("article[data-role=user] [data-attachment-id]").count() == 1
    assert page.watch.errors == [], page.watch.errors
