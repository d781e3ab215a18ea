"""Encryption at rest for secrets (provider API keys), and masking for display.

A MultiFernet over settings.ENCRYPTION_KEYS, newest first: new values are encrypted with the
newest key, old values stay readable while their key is still listed, and
`manage.py rotate_encryption_keys` re-encrypts everything with the newest.
"""

from __future__ import annotations

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.signals import setting_changed
from django.views.decorators.debug import sensitive_variables


class DecryptionError(Exception):
    """A stored secret cannot be decrypted with any configured key."""


@lru_cache(maxsize=1)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(k.encode()) for k in keys])


def fernet() -> MultiFernet:
    return _fernet(tuple(settings.ENCRYPTION_KEYS))


@sensitive_variables("plaintext")
def encrypt(plaintext: str) -> str:
    """Return the Fernet token (ASCII) for `plaintext`, made with the newest key."""
    return fernet().encrypt(plaintext.encode()).decode("ascii")


def decrypt(token: str) -> str:
    """Return the plaintext of `token`; raise DecryptionError if no configured key opens it."""
    try:
        return fernet().decrypt(token.encode("ascii")).decode()
    except (InvalidToken, ValueError, UnicodeError) as exc:
        raise DecryptionError("the secret cannot be decrypted with the configured keys") from exc


def rotate(token: str) -> str:
    """Return `token` re-encrypted with the newest key; raise DecryptionError if unreadable."""
    try:
        return fernet().rotate(token.encode("ascii")).decode("ascii")
    except (InvalidToken, ValueError, UnicodeError) as exc:
        raise DecryptionError("the secret cannot be decrypted with the configured keys") from exc


def mask(last4: str) -> str:
    """How a secret is shown anywhere: an ellipsis and its last four characters."""
    return f"…{last4}" if last4 else "…"


def _clear_cache(**kwargs: object) -> None:
    if kwargs.get("setting") == "ENCRYPTION_KEYS":
        _fernet.cache_clear()


setting_changed.connect(_clear_cache)
