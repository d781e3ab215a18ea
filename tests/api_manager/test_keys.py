"""Adding, listing, toggling, deleting and testing keys; every bad input; ownership; CSRF."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from api_manager.models import ProviderKey, UsageRecord
from tests.conftest import ANTHROPIC_SECRET, OPENAI_SECRET, make_key

ADD = "/api-manager/keys/add/"


def add_form(**overrides):
    data = {
        "provider": "openai",
        "label": "Team OpenAI",
        "api_key": OPENAI_SECRET,
        "base_url": "",
        "default_model": "gpt-4o-mini",
    }
    data.update(overrides)
    return data


def test_it_adds_a_key_and_redirects(alice_client, alice, fake):
    # Saving tests the key live (#12.7): against the fake provider, never the internet.
    response = alice_client.post(ADD, add_form(base_url=fake.openai_url))
    assert response.status_code == 302
    assert response["Location"] == "/api-manager/settings/"
    key = ProviderKey.objects.get()
    assert key.owner == alice
    assert key.last4 == OPENAI_SECRET[-4:]
    assert key.get_secret() == OPENAI_SECRET
    assert key.is_active


def test_it_adds_an_anthropic_key_with_a_compatible_base_url(alice_client, fake):
    # The key is tested live when saved (#12.7): a compatible endpoint the test can reach (the
    # fake, allowed by PROVIDER_PRIVATE_HOSTS), written with a trailing slash.
    response = alice_client.post(
        ADD,
        add_form(provider="anthropic", api_key=ANTHROPIC_SECRET, base_url=fake.anthropic_url + "/"),
    )
    assert response.status_code == 302
    key = ProviderKey.objects.get()
    assert key.base_url == fake.anthropic_url.rstrip("/")


@pytest.mark.parametrize(
    "overrides,field,message",
    [
        ({"api_key": ""}, "api_key", "Paste the API key"),
        ({"api_key": "     "}, "api_key", "Paste the API key"),
        ({"api_key": "sk-abc\ndef0123456"}, "api_key", "line breaks or control characters"),
        ({"api_key": "sk-abc\x00def0123456"}, "api_key", "characters are not allowed"),
        ({"api_key": "sk-abc def0123456"}, "api_key", "spaces"),
        ({"api_key": "sk-" + "a" * 5000}, "api_key", "too long"),
        ({"api_key": "sk-ant-api03-xxxxxxxxxxxx"}, "api_key", "Anthropic key"),
        ({"provider": "anthropic", "api_key": "sk-proj-xxxxxxxxxxxxxxxx"}, "api_key", "OpenAI key"),
        ({"base_url": "ftp://example.com"}, "base_url", "http:// or https://"),
        ({"base_url": "javascript:alert(1)"}, "base_url", "http:// or https://"),
        ({"base_url": "not a url"}, "base_url", "http:// or https://"),
        ({"provider": "gemini"}, "provider", "valid choice"),
        ({"label": ""}, "label", "required"),
    ],
)
def test_bad_input_is_refused_with_a_clear_error_and_creates_nothing(
    alice_client, overrides, field, message
):
    response = alice_client.post(ADD, add_form(**overrides))
    assert response.status_code == 400
    errors = response.context["form"].errors
    assert field in errors
    assert message in " ".join(errors[field])
    assert ProviderKey.objects.count() == 0
    # The page shows the error and never echoes the pasted key.
    assert message.encode() in response.content or field == "provider"
    pasted = overrides.get("api_key", OPENAI_SECRET).strip()
    if len(pasted) > 8:
        assert pasted.encode() not in response.content


def test_the_settings_page_lists_keys_masked(alice_client, alice):
    key = make_key(alice, label="Main key")
    html = alice_client.get("/api-manager/settings/").content.decode()
    assert f'data-key-id="{key.id}"' in html
    assert "Main key" in html
    assert "…" + OPENAI_SECRET[-4:] in html
    assert OPENAI_SECRET not in html
    assert key.secret_encrypted not in html


def test_an_empty_list_says_what_to_do(alice_client):
    html = alice_client.get("/api-manager/settings/").content.decode()
    assert "No API keys yet" in html


def test_toggle_disables_then_enables(alice_client, alice):
    key = make_key(alice)
    response = alice_client.post(f"/api-manager/keys/{key.id}/toggle/")
    assert response.status_code == 302
    key.refresh_from_db()
    assert not key.is_active
    alice_client.post(f"/api-manager/keys/{key.id}/toggle/")
    key.refresh_from_db()
    assert key.is_active


def test_delete_removes_the_key_but_keeps_its_usage(alice_client, alice):
    key = make_key(alice, label="Old key")
    UsageRecord.objects.create(
        key=key,
        key_label=key.label,
        user=alice,
        provider="openai",
        model="gpt-4o",
        input_tokens=5,
        output_tokens=7,
    )
    response = alice_client.post(f"/api-manager/keys/{key.id}/delete/")
    assert response.status_code == 302
    assert not ProviderKey.objects.exists()
    record = UsageRecord.objects.get()
    assert record.key is None
    assert record.key_label == "Old key"


def test_toggle_and_delete_are_post_only(alice_client, alice):
    key = make_key(alice)
    assert alice_client.get(f"/api-manager/keys/{key.id}/toggle/").status_code == 405
    assert alice_client.get(f"/api-manager/keys/{key.id}/delete/").status_code == 405
    assert ProviderKey.objects.filter(is_active=True).count() == 1


@pytest.mark.parametrize("action", ["toggle", "delete", "test"])
def test_it_checks_ownership(bob_client, alice, action):
    key = make_key(alice)
    response = bob_client.post(f"/api-manager/keys/{key.id}/{action}/")
    assert response.status_code == 404
    key.refresh_from_db()
    assert key.is_active


def test_bob_cannot_see_alices_key(bob_client, alice):
    key = make_key(alice, label="Alice private")
    assert b"Alice private" not in bob_client.get("/api-manager/settings/").content
    assert bob_client.get(f"/api-manager/keys/{key.id}/usage/").status_code == 404


def test_a_shared_key_is_listed_for_the_team_but_not_managed(bob_client, alice):
    make_key(alice, label="Team key", shared=True)
    html = bob_client.get("/api-manager/settings/").content.decode()
    assert "Team key" in html
    assert "/toggle/" not in html


def test_posts_need_a_csrf_token(alice):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    assert client.post(ADD, add_form()).status_code == 403
    key = make_key(alice)
    assert client.post(f"/api-manager/keys/{key.id}/delete/").status_code == 403
    assert ProviderKey.objects.count() == 1


def test_the_test_button_lists_models(alice_client, alice, fake):
    key = make_key(alice, fake)
    response = alice_client.post(f"/api-manager/keys/{key.id}/test/")
    assert response.status_code == 200
    body = response.json()
    assert body["ok"] is True
    assert "gpt-4o-mini" in body["models"]
    key.refresh_from_db()
    assert key.last_used_at is not None


@pytest.mark.parametrize(
    "secret,words",
    [
        ("sk-bad-key-0123456789SECRET", "rejected the API key"),
        ("sk-noperm-0123456789SECRET", "no permission"),
        ("sk-ratelimited-0123456789SECRET", "rate limiting"),
    ],
)
def test_the_test_button_says_what_is_wrong_without_echoing_the_key(
    alice_client, alice, fake, secret, words
):
    key = make_key(alice, fake, secret=secret)
    body = alice_client.post(f"/api-manager/keys/{key.id}/test/").json()
    assert body["ok"] is False
    assert words in body["error"]
    assert "SECRET" not in json.dumps(body)
    key.refresh_from_db()
    assert key.last_error_at is not None
    assert "SECRET" not in key.last_error


def test_the_test_button_reports_an_unreachable_base_url(alice_client, alice, settings):
    # Loopback is refused unless allowed (netguard): allow this closed port to reach it.
    settings.PROVIDER_PRIVATE_HOSTS = [*settings.PROVIDER_PRIVATE_HOSTS, "127.0.0.1:9"]
    key = make_key(alice, base_url="http://127.0.0.1:9/v1")
    body = alice_client.post(f"/api-manager/keys/{key.id}/test/").json()
    assert body == {
        "ok": False,
        "error": "Could not reach OpenAI at the configured base URL.",
        "code": "provider",
    }


def test_the_wizard_checks_an_unsaved_key_and_saves_nothing(alice_client, fake):
    response = alice_client.post(
        "/api-manager/keys/check/",
        add_form(
            provider="anthropic", api_key=ANTHROPIC_SECRET, base_url=fake.anthropic_url, label=""
        ),
    )
    assert response.json()["ok"] is True
    assert "claude-test-sonnet" in response.json()["models"]
    assert ProviderKey.objects.count() == 0


def test_the_wizard_check_refuses_bad_input(alice_client):
    response = alice_client.post(
        "/api-manager/keys/check/", add_form(api_key="sk-ant-api03-xxxxxxxxxxxx")
    )
    assert response.status_code == 400
    assert "Anthropic key" in response.json()["error"]


def test_a_key_that_cannot_be_decrypted_shows_as_unreadable(alice_client, alice, settings):
    key = make_key(alice, label="Lost key")
    settings.ENCRYPTION_KEYS = ["Qk5zZ0ZxV3pYb3d2S2JmT2V5dEhQc0ZlbXJ0V2Fkd0E="]
    response = alice_client.get("/api-manager/settings/")
    assert response.status_code == 200
    assert "unreadable — enter it again" in response.content.decode()
    body = alice_client.post(f"/api-manager/keys/{key.id}/test/").json()
    assert body["ok"] is False
    assert "unreadable" in body["error"]
