"""Markdown to safe HTML for model replies: markdown-it-py, Pygments, then nh3.

Raw HTML in the Markdown is not rendered (markdown-it's `html` option is off, so it is shown as
text), and nh3 then allows only the tags and attributes below, and only http(s) and mailto
links: `<script>`, `<img onerror>` and `javascript:` links come out inert.
"""

from __future__ import annotations

import nh3
from markdown_it import MarkdownIt
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name
from pygments.util import ClassNotFound

_FORMATTER = HtmlFormatter(nowrap=True, classprefix="tok-")

ALLOWED_TAGS = {
    "p",
    "br",
    "hr",
    "strong",
    "em",
    "del",
    "code",
    "pre",
    "blockquote",
    "ul",
    "ol",
    "li",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "a",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
    "span",
    "div",
}
ALLOWED_ATTRIBUTES = {
    "*": {"dir"},
    "a": {"href", "title"},
    "code": {"class"},
    "span": {"class"},
    "pre": {"class"},
    "ol": {"start"},
    "th": {"align"},
    "td": {"align"},
}


def _highlight(code: str, lang: str, attrs: str) -> str:
    try:
        lexer = get_lexer_by_name(lang) if lang else None
    except ClassNotFound:
        lexer = None
    if lexer is None:
        return ""  # markdown-it escapes the code itself
    return highlight(code, lexer, _FORMATTER)


def _dir_auto(state) -> None:  # type: ignore[no-untyped-def]
    """Every block of text gets dir="auto", so Persian and English paragraphs each read right."""
    for token in state.tokens:
        if token.type in {
            "paragraph_open",
            "heading_open",
            "list_item_open",
            "blockquote_open",
            "th_open",
            "td_open",
        }:
            token.attrSet("dir", "auto")


_md = MarkdownIt(
    "commonmark", {"html": False, "linkify": False, "typographer": False, "highlight": _highlight}
)
_md.enable(["table", "strikethrough"])
_md.core.ruler.push("dir_auto", _dir_auto)


def render_markdown(text: str) -> str:
    """Return sanitized HTML for `text` (Markdown)."""
    html = _md.render(text)
    return nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
        clean_content_tags={"script", "style"},
    )


def pygments_css() -> str:
    """The stylesheet for highlighted code (static/css/pygments.css is generated from this)."""
    return _FORMATTER.get_style_defs(".md pre")
