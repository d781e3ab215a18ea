"""Issue #12.4: a reply renders as Markdown while it streams (markdown-it + DOMPurify, math with
KaTeX as MathML), at most once per frame, and the server's HTML replaces it at `done`."""

from __future__ import annotations

import pytest

from tests.browser.conftest import screenshot
from tests.browser.test_flows import sign_in
from tests.conftest import make_key

REPLY = """Intro words to read.

## A heading

| Name | Count |
|:-----|------:|
| apples | 3 |
| pears | 12 |

> A quoted line.

1. first
2. second

Inline $x^2+1$ math and a block:

$$
\\frac{a}{b}
$$

```python
def hello():
    return "world"
```

Some closing words so the stream goes on a little after the code block is complete."""

# Counts, from the page's first script on: animation frames, and paints of a reply's body (one
# MutationRecord per innerHTML / textContent assignment).
COUNTERS = """
window.__frames = 0;
(function tick() { window.__frames += 1; requestAnimationFrame(tick); })();
window.__paints = 0;
new MutationObserver((records) => {
  for (const r of records) if (r.target.matches && r.target.matches('article.msg.assistant .body')) window.__paints += 1;
}).observe(document, { childList: true, subtree: true });
"""


def streaming_html(page, selector: str) -> str:
    """Wait for `selector` inside the reply while it is still streaming; return that reply's HTML."""
    page.wait_for_selector(f"article.assistant.streaming .body {selector}")
    return page.inner_html("article.assistant .body")


@pytest.mark.parametrize(("language", "phone"), [("en", False), ("fa", True)])
def test_a_reply_renders_as_markdown_while_it_streams(
    live_asgi, open_page, alice, fake, language, phone
):
    fake.scripted_reply = REPLY
    fake.word_delay = 0.06
    make_key(alice, fake)
    page = open_page(language, phone)
    sign_in(page, live_asgi.url)
    page.goto(f"{live_asgi.url}/ai-chat/")
    # KaTeX is loaded only once a reply holds math.
    assert page.evaluate("typeof window.katex") == "undefined"
    page.fill("#chat-input", "[[scripted]]")
    page.click("#chat-send")

    # Once the quote after it has begun, the table is whole.
    html = streaming_html(page, "blockquote")
    assert "## A heading" not in html and "|:-----|" not in html
    # One evaluation per look: the live reply is painted anew each frame, so elements do not
    # last from one call to the next.
    seen = page.evaluate(
        """() => {
          const body = document.querySelector('article.assistant.streaming .body');
          const style = (selector) => getComputedStyle(body.querySelector(selector));
          const th = [...body.querySelectorAll('table th')];
          return {
            heading: body.querySelector('h2').textContent,
            aligns: [...body.querySelectorAll('table td')].map((td) => getComputedStyle(td).textAlign),
            direction: style('table').direction,
            columnsLeftToRight: th[0].getBoundingClientRect().left < th[1].getBoundingClientRect().left,
          };
        }"""
    )
    # The table keeps its alignment (no inline style: the CSP would refuse it) and reads left
    # to right in either language.
    assert seen == {
        "heading": "A heading",
        "aligns": ["left", "right", "left", "right"],
        "direction": "ltr",
        "columnsLeftToRight": True,
    }
    bar = page.evaluate(
        "parseFloat(getComputedStyle(document.querySelector('article.assistant blockquote'))"
        ".borderInlineStartWidth)"
    )
    assert bar >= 3
    # Math while streaming: KaTeX's MathML, no inline style anywhere.
    streaming_html(page, ".math.inline math")
    html = streaming_html(page, ".math.block math mfrac")
    assert "style=" not in html
    assert page.evaluate("typeof window.katex") == "object"
    streaming_html(page, "pre[data-lang=python] .copy-btn")
    screenshot(page, f"{'phone-' if phone else ''}{language}-chat-markdown-streaming")

    # At done the server's HTML replaces it: highlighted code, MathML from latex2mathml.
    page.wait_for_selector("article.assistant.complete")
    final = page.locator("article.assistant .body")
    assert final.locator("pre code .tok-k").count() >= 1
    assert final.locator("pre[data-lang=python] .copy-btn").count() == 1
    assert final.locator(".math.inline math").count() == 1
    assert final.locator(".math.block math mfrac").count() == 1
    assert final.locator("td[align=right]").count() == 2
    assert "style=" not in final.inner_html()
    screenshot(page, f"{'phone-' if phone else ''}{language}-chat-markdown-done")
    assert page.watch.errors == [], page.watch.errors


def test_the_streaming_reply_is_painted_at_most_once_per_frame(live_asgi, open_page, alice, fake):
    # 400 words two milliseconds apart: many deltas arrive within one frame.
    fake.word_delay = 0.002
    make_key(alice, fake)
    page = open_page("en")
    page.add_init_script(COUNTERS)
    sign_in(page, live_asgi.url)
    page.goto(f"{live_asgi.url}/ai-chat/")
    page.fill("#chat-input", "[[long]]")
    page.click("#chat-send")
    page.wait_for_selector("article.assistant.complete")
    frames, paints = page.evaluate("[window.__frames, window.__paints]")
    text = page.inner_text("article.assistant .body")
    assert text.startswith("word0 word1") and "word399" in text
    # The deltas of one frame are painted together (the last paint is the server's HTML).
    assert 2 <= paints <= frames + 2, (paints, frames)
    assert paints < 200, paints
    assert page.watch.errors == [], page.watch.errors


XSS_MATH = (
    "Math $<img src=x onerror=window.__xss=1>$ and $\\href{javascript:window.__xss=2}{click}$ "
    "and $\\htmlClass{x}{y}$ and [link](javascript:window.__xss=3)\n\n"
    "$$\n</math><img src=x onerror=window.__xss=4><script>window.__xss=5</script>\n$$\n\n"
    "<math><mtext><img src=x onerror=window.__xss=6></mtext></math> done.\n\n"
    # A tail, so the reply is still streaming when the test looks at the math block.
    + " ".join(f"tail{n}" for n in range(30))
)


@pytest.mark.parametrize("language", ["en", "fa"])
def test_nothing_in_a_reply_runs_while_streaming_or_after(
    live_asgi, open_page, alice, fake, language
):
    fake.scripted_reply = XSS_MATH
    fake.word_delay = 0.05
    make_key(alice, fake)
    page = open_page(language)
    sign_in(page, live_asgi.url)
    page.goto(f"{live_asgi.url}/ai-chat/")
    page.fill("#chat-input", "[[scripted]]")
    page.click("#chat-send")
    unsafe = (
        "() => { const b = document.querySelector('article.assistant .body');"
        " return b.querySelectorAll('img, script, [onerror], [style], [href^=javascript], math [href]').length; }"
    )
    page.wait_for_selector("article.assistant.streaming .body .math.block")
    assert page.evaluate(unsafe) == 0
    page.wait_for_selector("article.assistant.complete")
    assert page.evaluate(unsafe) == 0
    assert "<math>" in page.inner_text("article.assistant .body")  # raw markup is shown as text
    page.reload()
    assert page.evaluate(unsafe) == 0
    assert page.evaluate("window.__xss") is None
    assert page.watch.errors == [], page.watch.errors
