"""The server sanitizer's allow-lists, for the browser's sanitizer (static/js/markdown.js).

The chat page writes them into data attributes, so a streaming reply and the saved one are
held to one list of tags and attributes (core/markdown.py).
"""

from __future__ import annotations

from django import template

from core.markdown import ALLOWED_ATTRIBUTES, ALLOWED_TAGS

register = template.Library()


@register.simple_tag
def markdown_tags() -> str:
    """The allowed tag names, space-separated and sorted."""
    return " ".join(sorted(ALLOWED_TAGS))


@register.simple_tag
def markdown_attributes() -> str:
    """Every attribute name allowed on some tag, space-separated and sorted."""
    return " ".join(sorted(set().union(*ALLOWED_ATTRIBUTES.values())))
