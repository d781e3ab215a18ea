"""Markdown to safe HTML for model replies: markdown-it-py, Pygments, latex2mathml, then nh3.

Raw HTML in the Markdown is not rendered (markdown-it's `html` option is off, so it is shown as
text), and nh3 then allows only the tags and attributes below, and only http(s) and mailto
links: `<script>`, `<img onerror>` and `javascript:` links come out inert.

The browser renders a streaming reply with the same rules (static/js/chat.js: markdown-it,
DOMPurify, KaTeX), so the server's HTML that replaces it at `done` looks the same:
- every block of text has `dir="auto"` (a Persian and an English paragraph each read right);
  tables are `dir="ltr"` (code is left to right by the stylesheet);
- a table column's alignment is an `align` attribute, not markdown-it's `style` (the CSP allows
  no inline styles);
- `$…$` and `$$…$$` are math, rendered to MathML (no styles, no scripts: the browser draws it).
The chat page hands ALLOWED_TAGS and the attribute names to DOMPurify, so one list rules both.
"""

from __future__ import annotations

import html
import re
from typing import Any

import nh3
from latex2mathml.converter import convert as latex_to_mathml
from markdown_it import MarkdownIt
from mdit_py_plugins.dollarmath import dollarmath_plugin
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name
from pygments.util import ClassNotFound

_FORMATTER = HtmlFormatter(nowrap=True, classprefix="tok-")

# What latex2mathml (server) and KaTeX's MathML output (browser) produce; no `maction`, no
# `annotation-xml` (it may hold HTML), and no `href` or `style` on any of them.
MATHML_TAGS = {
    "math",
    "semantics",
    "annotation",
    "mrow",
    "mi",
    "mn",
    "mo",
    "ms",
    "mspace",
    "mtext",
    "mfrac",
    "msqrt",
    "mroot",
    "msub",
    "msup",
    "msubsup",
    "munder",
    "mover",
    "munderover",
    "mmultiscripts",
    "mprescripts",
    "none",
    "mtable",
    "mtr",
    "mtd",
    "mstyle",
    "mpadded",
    "mphantom",
    "menclose",
    "merror",
}
MATHML_ATTRIBUTES = {
    "display",
    "displaystyle",
    "scriptlevel",
    "mathvariant",
    "mathcolor",
    "mathbackground",
    "mathsize",
    "stretchy",
    "fence",
    "separator",
    "lspace",
    "rspace",
    "accent",
    "accentunder",
    "largeop",
    "movablelimits",
    "symmetric",
    "minsize",
    "maxsize",
    "form",
    "width",
    "height",
    "depth",
    "voffset",
    "linethickness",
    "notation",
    "columnalign",
    "columnspacing",
    "columnlines",
    "rowalign",
    "rowspacing",
    "rowlines",
    "frame",
    "columnspan",
    "rowspan",
    "encoding",
}

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
} | MATHML_TAGS
ALLOWED_ATTRIBUTES = {
    "*": {"dir"},
    "a": {"href", "title"},
    "code": {"class"},
    "span": {"class"},
    "div": {"class"},
    "pre": {"class"},
    "ol": {"start"},
    "th": {"align"},
    "td": {"align"},
} | {tag: MATHML_ATTRIBUTES for tag in MATHML_TAGS}
URL_SCHEMES = {"http", "https", "mailto"}


def _highlight(code: str, lang: str, attrs: str) -> str:
    try:
        lexer = get_lexer_by_name(lang) if lang else None
    except ClassNotFound:
        lexer = None
    if lexer is None:
        return ""  # markdown-it escapes the code itself
    return highlight(code, lexer, _FORMATTER)


def _math(tex: str, options: dict[str, Any]) -> str:
    """MathML for `tex`; LaTeX it cannot read is shown as code (the reply still renders)."""
    try:
        return latex_to_mathml(tex, display="block" if options["display_mode"] else "inline")
    except Exception:  # noqa: BLE001 - the converter raises many types for bad input
        return f'<code class="math-error">{html.escape(tex)}</code>'


_BLOCKS_AUTO = {
    "paragraph_open",
    "heading_open",
    "bullet_list_open",
    "ordered_list_open",
    "list_item_open",
    "blockquote_open",
    "th_open",
    "td_open",
}
_ALIGN = re.compile(r"^text-align:\s*(left|center|right)$")


def _blocks(state) -> None:  # type: ignore[no-untyped-def]
    """Every block of text gets dir="auto", so Persian and English paragraphs each read right;
    tables are left to right inside; a column's alignment becomes an `align` attribute."""
    for token in state.tokens:
        if token.type in _BLOCKS_AUTO:
            token.attrSet("dir", "auto")
        if token.type == "table_open":
            token.attrSet("dir", "ltr")
        if token.type in {"th_open", "td_open"}:
            found = _ALIGN.match(str(token.attrGet("style") or ""))
            token.attrs.pop("style", None)
            if found:
                token.attrSet("align", found.group(1))


_md = MarkdownIt(
    "commonmark", {"html": False, "linkify": False, "typographer": False, "highlight": _highlight}
)
_md.enable(["table", "strikethrough"])
# `$5 and $10` stays money: no math that opens or closes beside a space or a digit.
_md.use(
    dollarmath_plugin,
    allow_labels=False,
    allow_space=False,
    allow_digits=False,
    renderer=_math,
)
_md.core.ruler.push("blocks", _blocks)


def render_markdown(text: str) -> str:
    """Return sanitized HTML for `text` (Markdown)."""
    return nh3.clean(
        _md.render(text),
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes=URL_SCHEMES,
        link_rel="noopener noreferrer nofollow",
        clean_content_tags={"script", "style"},
    )


def pygments_css() -> str:
    """The stylesheet for highlighted code (static/css/pygments.css is generated from this)."""
    return _FORMATTER.get_style_defs(".md pre")
