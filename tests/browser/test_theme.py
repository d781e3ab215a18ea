"""Dark and light themes: code and text readable (WCAG AA, computed in the browser from
getComputedStyle), the theme control remembered, and applied before the first paint."""

from __future__ import annotations

import pytest

from ai_chat.models import Conversation, Message
from tests.browser.conftest import screenshot
from tests.browser.test_flows import sign_in
from tests.conftest import make_key

CODE = """Code in a few languages, with `inline code` too.

```python
@decorator
class Greeter(Base):
    \"\"\"Docstring.\"\"\"
    count: int = 0x1F  # a comment
    def hello(self, name="world") -> str:
        return f"hello {name!r}\\n" if not None else r"\\d+"
```

```javascript
const answer = await fetch(`/x/${id}`, { method: "POST" }); // comment
export default function f(a) { return a === null ? 1.5e3 : /re+/g.test(a); }
```

```sql
SELECT id, COUNT(*) AS n FROM message WHERE role = 'user' GROUP BY id;
```

```diff
- removed line
+ added line
```

```html
<div class="x" data-y='1'>&amp; text</div>
```
"""

# Contrast of each element's own text against the first opaque background behind it.
CONTRAST_JS = """(selector) => {
  const rgb = (s) => (s.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const f = (c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const background = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const c = rgb(getComputedStyle(e).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] === 1)) return c.slice(0, 3);
    }
    return rgb(getComputedStyle(document.body).backgroundColor);
  };
  const out = [];
  for (const el of document.querySelectorAll(selector)) {
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!own || !el.getClientRects().length || el.closest('[disabled], [hidden]')) continue;
    const fg = rgb(getComputedStyle(el).color), bg = background(el);
    const [hi, lo] = [lum(fg), lum(bg)].sort((a, b) => b - a);
    out.push({ text: el.textContent.trim().slice(0, 30), cls: el.className,
               ratio: Math.round(((hi + 0.05) / (lo + 0.05)) * 100) / 100 });
  }
  return out;
}"""


@pytest.fixture
def conversation(alice, fake):
    make_key(alice, fake)
    conversation = Conversation.objects.create(owner=alice, title="Code colours")
    question = Message(conversation=conversation, role="user")
    question.set_content("Show code")
    question.save()
    reply = Message(conversation=conversation, role="assistant", model="gpt-4o-mini")
    reply.set_content(CODE)
    reply.save()
    return conversation


def low_contrast(page, selector: str) -> list[dict]:
    found = page.evaluate(CONTRAST_JS, selector)
    assert found, selector
    return [item for item in found if item["ratio"] < 4.5]


@pytest.mark.parametrize(("language", "phone"), [("en", False), ("fa", True)])
def test_code_and_text_are_readable_in_both_themes(
    live_asgi, open_page, conversation, language, phone
):
    page = open_page(language, phone)
    sign_in(page, live_asgi.url)
    page.goto(f"{live_asgi.url}/ai-chat/c/{conversation.id}/")
    assert page.locator(".md pre [class^=tok-]").count() > 30
    for theme in ("light", "dark"):
        page.evaluate("(t) => { localStorage.setItem('theme', t); }", theme)
        page.reload()
        assert page.get_attribute("html", "data-theme") == theme
        code = low_contrast(page, ".md pre, .md pre *, .md code")
        assert code == [], (theme, code)
        text = low_contrast(page, "main *")
        assert text == [], (theme, text)
        screenshot(page, f"{'phone-' if phone else ''}{language}-chat-{theme}")


def test_the_theme_control_cycles_is_remembered_and_applies_before_the_first_paint(
    live_asgi, open_page, alice
):
    page = open_page("en")
    sign_in(page, live_asgi.url)
    control = page.locator(".sidebar [data-action=theme]")
    assert page.get_attribute("html", "data-theme-choice") == "system"
    assert page.get_attribute("html", "data-theme") == "light"  # headless Chromium is light
    control.click()
    assert page.get_attribute("html", "data-theme-choice") == "light"
    control.click()
    assert page.get_attribute("html", "data-theme") == "dark"
    assert "Dark" in control.inner_text()
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")

    # Another page of the panel opens dark, already in the first frame the browser paints:
    # the head script ran before <body> was parsed (checked from a script that the page runs
    # as soon as it exists, before any stylesheet or deferred script could change it).
    page.add_init_script(
        "document.addEventListener('readystatechange', () => {"
        " if (document.readyState === 'interactive') window.__first = document.documentElement.dataset.theme; },"
        " { once: true });"
    )
    page.goto(f"{live_asgi.url}/api-manager/settings/")
    assert page.evaluate("window.__first") == "dark"
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == background
    # The sign-in page follows it too.
    page.context.clear_cookies()
    page.goto(f"{live_asgi.url}/login/")
    assert page.get_attribute("html", "data-theme") == "dark"
    screenshot(page, "en-login-dark")
    page.locator("[data-action=theme]").click()
    assert page.get_attribute("html", "data-theme-choice") == "system"
    assert page.evaluate("localStorage.getItem('theme')") == "system"
    assert page.watch.errors == [], page.watch.errors


def test_the_system_theme_follows_the_system(live_asgi, open_page, alice):
    page = open_page("fa", phone=True)
    page.emulate_media(color_scheme="dark")
    sign_in(page, live_asgi.url)
    assert page.get_attribute("html", "data-theme") == "dark"
    page.emulate_media(color_scheme="light")
    page.wait_for_function("() => document.documentElement.dataset.theme === 'light'")
    assert page.watch.errors == [], page.watch.errors
