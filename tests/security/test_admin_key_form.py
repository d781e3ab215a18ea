"""The admin's key form goes through the same base URL checks as the panel's own form: an
administrator (or a stolen admin session) cannot point a key at the server's own network,
put credentials or header-breaking characters in a URL, or use another scheme."""

from __future__ import annotations

import pytest

from api_manager.providers import netguard
from tests.conftest import make_key


def change(admin_client, key, base_url: str):
    return admin_client.post(
        f"/admin/api_manager/providerkey/{key.pk}/change/",
        {
            "label": key.label,
            "base_url": base_url,
            "default_model": key.default_model,
            "is_active": "on",
            "monthly_token_budget": "",
        },
    )


@pytest.mark.parametrize(
    "url,message",
    [
        ("http://169.254.169.254/latest/meta-data/", netguard.UNSAFE_MESSAGE),
        ("http://127.0.0.1:5432/", netguard.UNSAFE_MESSAGE),
        ("http://localhost:6379/v1", netguard.UNSAFE_MESSAGE),
        ("http://0x7f000001/v1", None),  # not a host name URLValidator takes
        ("http://[::ffff:127.0.0.1]/v1", netguard.UNSAFE_MESSAGE),
        ("https://user:pass@api.openai.com/v1", netguard.CREDENTIALS_MESSAGE),
        ("https://api.openai.com/v1\r\nX-Injected: 1", None),
        ("file:///etc/passwd", None),
    ],
)
def test_the_admin_cannot_save_a_refused_base_url(admin_client, alice, fake, url, message):
    key = make_key(alice, fake)
    before = key.base_url
    response = change(admin_client, key, url)
    assert response.status_code == 200  # the form again, with its error
    errors = response.context["adminform"].form.errors["base_url"]
    if message is not None:
        assert errors == [str(message)]
    key.refresh_from_db()
    assert key.base_url == before


def test_the_admin_may_save_an_allowed_local_server_or_no_url(admin_client, alice, fake):
    key = make_key(alice, fake, base_url="https://api.openai.com/v1")
    assert change(admin_client, key, fake.openai_url).status_code == 302
    key.refresh_from_db()
    assert key.base_url == fake.openai_url
    assert change(admin_client, key, "").status_code == 302
    key.refresh_from_db()
    assert key.base_url == ""
