"""A logging filter that redacts anything that looks like a provider API key."""

from __future__ import annotations

import logging
import re

# OpenAI (sk-…, sk-proj-…), Anthropic (sk-ant-…), OpenRouter (sk-or-…), and bearer tokens.
SECRET_PATTERN = re.compile(
    r"(sk-[A-Za-z0-9_\-]{6,}|(?i:bearer)\s+[A-Za-z0-9_\-\.=]{8,}|x-api-key[\"']?\s*[:=]\s*[\"']?[^\s\"',]{6,})"
)


def redact(text: str) -> str:
    """Return `text` with every key-like substring replaced by `[redacted]`."""
    return SECRET_PATTERN.sub("[redacted]", text)


class RedactSecretsFilter(logging.Filter):
    """Rewrites each record's message (after %-formatting) and exception text."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is not ours to fix here
            return True
        redacted = redact(message)
        if redacted != message:
            record.msg = redacted
            record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            import traceback

            record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)))
            record.exc_info = None
        return True
