"""Issue #12.5: right to left with English content. Each block of a reply takes its own
direction (the server's HTML and the browser's streaming rendering alike), tables and code read
left to right, list numbers keep their room, the key picker shows its label, and dates and
digits follow the language on every page, charts included."""

from __future__ import annotations

import datetime as dt

import jdatetime
import pytest
from django.utils import timezone

from ai_chat.models import Conversation, Message
from api_manager.models import UsageRecord
from tests.browser.conftest import screenshot
from tests.browser.test_flows import sign_in
from tests.conftest import make_key

MIXED = """این پاراگراف فارسی است.

This paragraph is English.

1. First English item
2. Second English item

| Name | Count |
|:-----|------:|
| apples | 3 |

```python
print("left to right")
```

Closing words in English, so the stream is still going when the list is checked: """ + " ".join(
    f"word{n}" for n in range(40)
)

# Each block's computed direction, the list's room for its numbers, the table's order.
LOOK = """(body) => {
  const dir = (el) => getComputedStyle(el).direction;
  const ol = body.querySelector('ol');
  const olBox = ol.getBoundingClientRect();
  const bodyBox = body.getBoundingClientRect();
  const th = [...body.querySelectorAll('th')].map((c) => c.getBoundingClientRect().left);
  const start = dir(ol) === 'ltr' ? 'paddingLeft' : 'paddingRight';
  return {
    paragraphs: [...body.querySelectorAll(':scope > p')].slice(0, 2).map(dir),
    list: dir(ol),
    item: dir(ol.querySelector('li')),
    numbersRoom: parseFloat(getComputedStyle(ol)[start]) >= 24 && olBox.left >= bodyBox.left - 1,
    table: dir(body.querySelector('table')),
    columnsLeftToRight: th[0] < th[1],
    code: dir(body.querySelector('pre')),
  };
}"""

EXPECTED = {
    "paragraphs": ["rtl", "ltr"],
    "list": "ltr",
    "item": "ltr",
    "numbersRoom": True,
    "table": "ltr",
    "columnsLeftToRight": True,
    "code": "ltr",
}


@pytest.mark.parametrize(("language", "phone"), [("fa", False), ("fa", True), ("en", False)])
def test_each_block_of_a_reply_takes_its_own_direction(
    live_asgi, open_page, alice, fake, language, phone
):
    fake.scripted_reply = MIXED
    fake.word_delay = 0.04
    make_key(alice, fake)
    page = open_page(language, phone)
    sign_in(page, live_asgi.url)
    page.goto(f"{live_asgi.url}/ai-chat/")
    page.fill("#chat-input", "[[scripted]]")
    page.click("#chat-send")
    # While streaming (the browser's rendering), once the code block has begun...
    page.wait_for_selector("article.assistant.streaming .body pre")
    live = page.evaluate(
        f"[({LOOK})(document.querySelector('article.assistant .body')),"
        " !!document.querySelector('article.assistant.streaming')]"
    )
    assert live == [EXPECTED, True]  # the browser's rendering, looked at while it streams
    # ...and in the server's HTML at done, and after a reload.
    page.wait_for_selector("article.assistant.complete")
    assert page.eval_on_selector("article.assistant .body", LOOK) == EXPECTED
    page.reload()
    assert page.eval_on_selector("article.assistant .body", LOOK) == EXPECTED
    screenshot(page, f"{'phone-' if phone else ''}{language}-chat-mixed-directions")
    assert page.watch.errors == [], page.watch.errors


def test_the_key_picker_and_the_placeholder_read_right_in_persian(
    live_asgi, open_page, alice, fake
):
    make_key(alice, fake, label="A team key with a rather long label")
    page = open_page("fa")
    sign_in(page, live_asgi.url)
    page.goto(f"{live_asgi.url}/ai-chat/")
    # The picker is as wide as its label (measured in its own font) while the row has room.
    fits = page.evaluate(
        """() => {
          const select = document.querySelector('#chat-key');
          const style = getComputedStyle(select);
          const canvas = document.createElement('canvas').getContext('2d');
          canvas.font = `${style.fontWeight} ${style.fontSize} ${style.fontFamily}`;
          const text = canvas.measureText(select.selectedOptions[0].textContent).width;
          return select.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight) >= text;
        }"""
    )
    assert fits
    # An empty message box is right to left (its Persian placeholder with it); typed English
    # text takes its own direction.
    assert page.eval_on_selector("#chat-input", "e => getComputedStyle(e).direction") == "rtl"
    page.fill("#chat-input", "Hello there")
    assert page.eval_on_selector("#chat-input", "e => getComputedStyle(e).direction") == "ltr"
    assert page.get_attribute("#chat-alert", "dir") == "auto"


# Latin digits anywhere in the visible text of a Persian page, outside what is not the
# panel's own words (code, model names, typed text, user content: they keep their digits).
LATIN_DIGITS = r"""() => {
  const skip = 'code, pre, .mono, .ltr, input, textarea, select, script, style, template, [dir=auto], title';
  const found = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const parent = node.parentElement;
    if (!parent || parent.closest(skip) || !parent.getClientRects().length) continue;
    if (/[0-9]/.test(node.textContent)) found.push(node.textContent.trim());
  }
  for (const el of document.querySelectorAll('svg text, svg title')) {
    if (/[0-9]/.test(el.textContent)) found.push(el.textContent.trim());
  }
  return found;
}"""


@pytest.mark.parametrize("language", ["fa", "en"])
def test_dates_and_digits_follow_the_language_charts_included(
    live_asgi, open_page, alice, fake, language
):
    key = make_key(alice, fake, label="Team key")
    UsageRecord.objects.create(
        key=key,
        user=alice,
        provider="openai",
        model="gpt-4o-mini",
        input_tokens=1234,
        output_tokens=56,
    )
    conversation = Conversation.objects.create(owner=alice, title="Numbers")
    reply = Message(conversation=conversation, role="assistant", model="gpt-4o-mini", total_ms=1500)
    reply.set_content("A reply.")
    reply.save()
    page = open_page(language)
    sign_in(page, live_asgi.url)
    today = timezone.localdate()
    for name, path in {
        "dashboard": "/",
        "keys": "/api-manager/settings/",
        "usage": f"/api-manager/keys/{key.id}/usage/",
        "chat": f"/ai-chat/c/{conversation.id}/",
    }.items():
        page.goto(live_asgi.url + path)
        found = page.evaluate(LATIN_DIGITS)
        if language == "fa":
            assert found == [], (name, found)
        else:
            assert found, name  # English pages do show Latin digits: the check can see them
        if name == "usage":
            # 30 days, oldest first, every fifth one labelled: Jalali month/day in Persian digits.
            labels = page.eval_on_selector_all(
                "svg.chart text", "ts => ts.map((t) => t.textContent)"
            )
            first = today - dt.timedelta(days=29)
            days = [first + dt.timedelta(days=n) for n in range(0, 30, 5)]
            if language == "fa":
                persian = str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹")
                expected = [
                    jdatetime.date.fromgregorian(date=d).strftime("%m/%d").translate(persian)
                    for d in days
                ]
                screenshot(page, "fa-usage-jalali-chart")
            else:
                expected = [d.strftime("%m-%d") for d in days]
            assert labels == expected
    assert page.watch.errors == [], page.watch.errors
