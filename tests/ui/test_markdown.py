"""core.markdown: the server's rendering of a reply (the HTML that replaces the streamed one)."""

from __future__ import annotations

import re

from core.markdown import render_markdown


def test_a_table_keeps_its_alignment_without_inline_styles():
    html = render_markdown("| a | b | c |\n|:--|:-:|--:|\n| 1 | 2 | 3 |")
    assert '<table dir="ltr">' in html
    assert re.findall(r'<td[^>]*align="(\w+)"', html) == ["left", "center", "right"]
    assert "style" not in html


def test_every_block_takes_its_own_direction():
    html = render_markdown("# Title\n\nText\n\n> quote\n\n1. one\n\n- two\n\n| a |\n|---|\n| b |")
    for tag in ("h1", "p", "blockquote", "ol", "ul", "li", "th", "td"):
        assert re.search(rf'<{tag} [^>]*dir="auto"', html), tag


def test_code_keeps_its_language_and_highlighting():
    html = render_markdown("```python\nprint(1)\n```")
    assert '<code class="language-python">' in html
    assert 'class="tok-' in html


def test_math_is_mathml_inline_and_in_blocks():
    html = render_markdown("Area $\\pi r^2$ here.\n\n$$\n\\frac{a}{b}\n$$")
    assert '<span class="math inline"><math display="inline">' in html
    assert "<mi>π</mi>" in html or "<mi>&#x003C0;</mi>" in html or "π" in html
    assert '<div class="math block">' in html
    assert "<mfrac>" in html
    assert "style" not in html


def test_money_is_not_math():
    html = render_markdown("It costs $5 and $10, or $ 3 $.")
    assert "<math" not in html
    assert "$5 and $10" in html


def test_latex_it_cannot_read_shows_as_code():
    assert '<code class="math-error">\\frac{</code>' in render_markdown("Bad $\\frac{$ math")


def test_nothing_inside_math_can_run_or_link():
    html = render_markdown(
        "$<img src=x onerror=alert(1)>$ and $\\href{javascript:alert(2)}{x}$ and "
        "$\\style{color:red}{y}$\n\n$$\n</math><script>alert(3)</script><img src=x onerror=alert(4)>\n$$"
    )
    assert "<math" in html
    for forbidden in ("<img", "<script", "onerror=", "href=", "javascript:", "style="):
        assert forbidden not in html, forbidden


def test_raw_mathml_in_the_text_is_shown_not_rendered():
    # markdown-it's html option is off: MathML typed by a model is text, never markup.
    html = render_markdown('<math><mtext><img src=x onerror="alert(1)"></mtext></math>')
    assert "<math" not in html
    assert "&lt;math&gt;" in html
