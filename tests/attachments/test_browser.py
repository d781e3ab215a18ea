"""The composer's attachments in real Chromium: paste an image, drop a file, remove one, send;
the thread shows them, after a reload too; in English and in Persian."""

from __future__ import annotations

import base64

import pytest
from django.utils import translation
from django.utils.translation import gettext

from ai_chat.models import Attachment
from tests.attachments import files
from tests.browser.conftest import CHROMIUM, screenshot
from tests.browser.test_flows import sign_in
from tests.conftest import make_key

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM,
        reason="BROWSER TESTS SKIPPED: Chromium is not installed (apt-get install -y chromium)",
    ),
]

# Builds a DataTransfer holding one file (bytes as base64) in the page.
TRANSFER = """([name, type, b64]) => {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const transfer = new DataTransfer();
    transfer.items.add(new File([bytes], name, { type }));
    return transfer;
}"""


def paste(page, name: str, data: bytes, content_type: str) -> None:
    page.evaluate(
        """([name, type, b64]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, { type }));
            const event = new ClipboardEvent("paste", {
                clipboardData: transfer, bubbles: true, cancelable: true,
            });
            document.getElementById("chat-input").dispatchEvent(event);
        }""",
        [name, content_type, base64.b64encode(data).decode()],
    )


def drop(page, name: str, data: bytes, content_type: str) -> None:
    transfer = page.evaluate_handle(TRANSFER, [name, content_type, base64.b64encode(data).decode()])
    page.dispatch_event("#composer", "dragover", {"dataTransfer": transfer})
    page.dispatch_event("#composer", "drop", {"dataTransfer": transfer})


@pytest.mark.parametrize("language", ["en", "fa"])
def test_paste_an_image_drop_a_file_and_see_them_on_the_message(
    live_asgi, open_page, alice, fake, language
):
    make_key(alice, fake)
    page = open_page(language)
    sign_in(page, live_asgi.url)
    page.goto(f"{live_asgi.url}/ai-chat/")
    with translation.override(language):
        assert page.inner_text("[data-action=attach]") == gettext("Attach")

    paste(page, "image.png", files.png(), "image/png")
    drop(page, "notes.py", b"print('hi')\n", "text/x-python")
    drop(page, "extra.txt", b"not this one", "text/plain")
    chips = page.locator("#attach-chips [data-attachment-chip]")
    assert chips.count() == 3
    chips.nth(0).locator("img").wait_for()  # a thumbnail for the image
    assert "notes.py" in chips.nth(1).inner_text()
    chips.nth(2).locator("[data-action=remove-attachment]").click()
    assert chips.count() == 2
    screenshot(page, f"{language}-chat-attachments-chips")

    page.fill("#chat-input", "What do these show?")
    page.click("#chat-send")
    page.wait_for_selector("article.assistant.complete")
    assert page.locator("#attach-chips [data-attachment-chip]").count() == 0
    sent = page.locator("article.user").last
    assert sent.locator(".attachments .attach-chip").count() == 2

    # What reached the provider: the image as an image part, the code as a text part.
    assert [p.kind for p in fake.parts] == ["image"]
    parts = fake.requests[-1].body["messages"][-1]["content"]
    assert parts[1] == {"type": "text", "text": "[File: notes.py]\nprint('hi')\n"}
    rows = list(Attachment.objects.order_by("id"))
    assert [r.name for r in rows][1] == "notes.py" and rows[0].name.startswith("pasted-")

    # After a reload: a thumbnail that opens full size, and the file as a link.
    page.reload()
    user = page.locator("article.user").last
    image = user.locator(".attachments img")
    image.wait_for()
    # Loaded, not only in the page (checked at once, it raced the image's request).
    page.wait_for_function(
        "(img) => img.complete && img.naturalWidth > 0", arg=image.element_handle(), timeout=10_000
    )
    link = user.locator(".attachments a[download]")
    assert link.inner_text() == "notes.py"
    assert link.get_attribute("href") == f"/ai-chat/attachments/{rows[1].id}/"
    assert (
        user.locator(".attachments a img")
        .evaluate("(img) => img.parentElement.href")
        .endswith(f"/ai-chat/attachments/{rows[0].id}/")
    )
    screenshot(page, f"{language}-chat-attachments-thread")
    assert page.watch.errors == [], page.watch.errors
