"""Template filters for numbers, dates and secrets in the active language.

In Persian, digits are shown as Persian digits and dates in the Jalali calendar.
"""

from __future__ import annotations

import datetime as dt

import jdatetime
from django import template
from django.utils import formats, timezone
from django.utils.translation import get_language

from core import crypto

register = template.Library()

_PERSIAN_DIGITS = str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹")


def _persian() -> bool:
    return (get_language() or "").startswith("fa")


def localize_digits(text: str) -> str:
    """Return `text` with Western digits replaced by Persian ones when Persian is active."""
    return text.translate(_PERSIAN_DIGITS) if _persian() else text


@register.filter
def num(value: object) -> str:
    """A number with thousands separators, in the active language's digits."""
    if value is None or value == "":
        text = "0"
    elif isinstance(value, float):
        text = f"{value:,.2f}"
    else:
        try:
            text = f"{int(value):,}"  # type: ignore[call-overload]
        except (TypeError, ValueError):
            text = str(value)
    # The language is looked up once (a chart's bar titles call this hundreds of times a page).
    if _persian():
        text = text.replace(",", "٬").replace(".", "٫").translate(_PERSIAN_DIGITS)
    return text


@register.filter
def money(value: object) -> str:
    """An estimated cost in US dollars."""
    try:
        amount = float(value or 0)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        amount = 0.0
    text = f"${amount:,.4f}" if amount < 1 else f"${amount:,.2f}"
    if _persian():
        text = text.replace(",", "٬").replace(".", "٫")
    return localize_digits(text)


@register.filter
def digits(value: object) -> str:
    """Any text, with its digits in the active language's form."""
    return localize_digits(str(value))


@register.filter
def when(value: dt.datetime | dt.date | None, fmt: str = "datetime") -> str:
    """A date or date-time in local time: Gregorian in English, Jalali in Persian."""
    if value is None:
        return "—"
    if isinstance(value, dt.datetime):
        value = timezone.localtime(value) if timezone.is_aware(value) else value
    if _persian():
        if isinstance(value, dt.datetime):
            jd = jdatetime.datetime.fromgregorian(datetime=value)
            text = jd.strftime("%Y/%m/%d %H:%M" if fmt == "datetime" else "%Y/%m/%d")
        else:
            text = jdatetime.date.fromgregorian(date=value).strftime("%Y/%m/%d")
        return localize_digits(text)
    if fmt == "date" or not isinstance(value, dt.datetime):
        return formats.date_format(value, "Y-m-d")
    return formats.date_format(value, "Y-m-d H:i")


@register.filter
def masked(last4: str) -> str:
    return crypto.mask(last4)


@register.filter
def without_credentials(url: object) -> str:
    """`url` with any `user:password@` removed: a base URL saved before such URLs were refused
    (or typed into a form that is shown again) never shows its credentials."""
    text = "" if url is None else str(url)
    scheme, sep, rest = text.partition("://")
    if not sep:
        return text
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        authority = authority.rpartition("@")[2]
    return f"{scheme}://{authority}{slash}{path}"


@register.filter
def with_id(pattern: str, pk: object) -> str:
    """An address reversed once for object 0 (`{% url 'ai_chat:conversation' 0 as pattern %}`)
    made object `pk`'s: its last `/0/` segment replaced, the convention the scripts follow too.
    A list of a hundred rows then pays one `reverse()` instead of a hundred (~1 ms of the chat
    page's ~7, measured with bench/chat_page.py)."""
    head, sep, tail = str(pattern).rpartition("/0/")
    return f"{head}/{pk}/{tail}" if sep else str(pattern)
