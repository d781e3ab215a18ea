"""Secrets at rest: no plaintext in the database, rotation keeps keys readable, logs redact."""

from __future__ import annotations

import io
import logging

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.db import connection

from api_manager.models import ProviderKey
from core import crypto
from core.logging import RedactSecretsFilter, redact
from tests.conftest import OPENAI_SECRET, make_key


def raw_table_dump() -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {ProviderKey._meta.db_table}")
        return repr(cursor.fetchall())


def test_the_database_holds_no_plaintext(alice):
    make_key(alice)
    dump = raw_table_dump()
    assert OPENAI_SECRET not in dump
    assert OPENAI_SECRET[:-4] not in dump
    assert OPENAI_SECRET[-4:] in dump  # only the last four, for display


def test_the_database_file_holds_no_plaintext_after_adding_through_the_form(
    alice_client, settings, fake
):
    # Saving tests the key live: against the fake provider, never the internet.
    response = alice_client.post(
        "/api-manager/keys/add/",
        {"provider": "openai", "label": "k", "api_key": OPENAI_SECRET, "base_url": fake.openai_url},
    )
    assert response.status_code == 302
    assert OPENAI_SECRET not in raw_table_dump()


def test_rotation_reencrypts_with_the_newest_key_and_keeps_every_key_readable(alice, settings):
    keys = [
        make_key(alice, label=f"k{i}", secret=f"sk-proj-rotation-test-{i:04d}") for i in range(3)
    ]
    old = list(settings.ENCRYPTION_KEYS)
    new = Fernet.generate_key().decode()
    settings.ENCRYPTION_KEYS = [new, *old]
    out = io.StringIO()
    call_command("rotate_encryption_keys", stdout=out)
    assert "Re-encrypted 3 key(s); 0 unreadable" in out.getvalue()
    settings.ENCRYPTION_KEYS = [new]  # the old key is dropped
    for i, key in enumerate(keys):
        key.refresh_from_db()
        assert key.get_secret() == f"sk-proj-rotation-test-{i:04d}"


def test_rotation_reports_an_unreadable_key_instead_of_crashing(alice, settings):
    make_key(alice)
    settings.ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    out, err = io.StringIO(), io.StringIO()
    call_command("rotate_encryption_keys", stdout=out, stderr=err)
    assert "1 unreadable" in out.getvalue()
    assert "enter it again" in err.getvalue()


def test_a_wrong_key_raises_decryption_error(settings):
    token = crypto.encrypt("secret")
    settings.ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(crypto.DecryptionError):
        crypto.decrypt(token)


def test_repr_and_str_never_show_the_secret(alice):
    key = make_key(alice)
    assert OPENAI_SECRET not in repr(key)
    assert OPENAI_SECRET not in str(key)


@pytest.mark.parametrize(
    "text",
    [
        f"calling with {OPENAI_SECRET}",
        "Authorization: Bearer abcdefghijklmnop1234",
        "key sk-ant-api03-abcdefghijklmnopqrstuvwxyz here",
    ],
)
def test_the_log_filter_redacts_anything_that_looks_like_a_key(text):
    assert "[redacted]" in redact(text)
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "msg %s", (text,), None)
    RedactSecretsFilter().filter(record)
    assert "sk-" not in record.getMessage().replace("[redacted]", "")
    assert "abcdefghijklmnop1234" not in record.getMessage()


def test_adding_a_key_logs_no_secret(alice_client, caplog, fake):
    caplog.set_level(logging.DEBUG)
    alice_client.post(
        "/api-manager/keys/add/",
        {"provider": "openai", "label": "k", "api_key": OPENAI_SECRET, "base_url": fake.openai_url},
    )
    alice_client.post(
        "/api-manager/keys/add/", {"provider": "anthropic", "label": "k", "api_key": OPENAI_SECRET}
    )
    assert OPENAI_SECRET not in caplog.text


def test_the_error_report_hides_the_pasted_key(alice, fake):
    """A crash while adding a key: the report Django mails or logs (DEBUG off) has no secret,
    neither in the POST data nor in the view's local variables."""
    import sys
    from unittest import mock

    from django.core.signals import got_request_exception
    from django.test import Client
    from django.views.debug import ExceptionReporter

    reports = []

    def capture(sender, request, **kwargs):
        reports.append(
            ExceptionReporter(request, *sys.exc_info(), is_email=True).get_traceback_text()
        )

    got_request_exception.connect(capture)
    client = Client(raise_request_exception=False)
    client.force_login(alice)
    try:
        with mock.patch.object(ProviderKey, "save", side_effect=RuntimeError("database on fire")):
            response = client.post(
                "/api-manager/keys/add/",
                {
                    "provider": "openai",
                    "label": "k",
                    "api_key": OPENAI_SECRET,
                    "base_url": fake.openai_url,
                },
            )
    finally:
        got_request_exception.disconnect(capture)
    assert response.status_code == 500
    assert OPENAI_SECRET.encode() not in response.content
    assert len(reports) == 1
    assert "database on fire" in reports[0]
    assert "api_key" in reports[0]  # the POST field is listed, its value hidden
    assert OPENAI_SECRET not in reports[0]
