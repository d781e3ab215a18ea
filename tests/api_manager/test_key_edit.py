"""#12.7: a key is tested live when saved (refused unless "save anyway"), can be edited by its
owner, and offers the models its provider lists (cached, refreshed by Test, rate-limited)."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.test import Client

from api_manager.models import ProviderKey
from core.models import SecurityEvent, SecurityEventKind
from tests.conftest import OPENAI_SECRET, make_key

ADD = "/api-manager/keys/add/"
BAD_SECRET = "sk-bad-key-0123456789SECRET"
NEW_SECRET = "sk-proj-replacedsecret000000000000000qrst"


@pytest.fixture(autouse=True)
def _empty_cache():
    # The model lists and the check counters live in the cache: each test starts without them.
    cache.clear()
    yield
    cache.clear()


def add_form(fake, **overrides):
    data = {
        "provider": "openai",
        "label": "Team OpenAI",
        "api_key": OPENAI_SECRET,
        "base_url": fake.openai_url,
        "default_model": "gpt-4o-mini",
    }
    data.update(overrides)
    return data


def model_calls(fake) -> int:
    return sum(1 for seen in fake.requests if seen.path.endswith("/models"))


def edit_form(key, **overrides):
    data = {
        "label": key.label,
        "api_key": "",
        "base_url": key.base_url,
        "default_model": key.default_model,
        "monthly_token_budget": key.monthly_token_budget or "",
    }
    if key.shared:
        data["shared"] = "on"
    data.update(overrides)
    return data


# -- saving after a live test -------------------------------------------------------------------


def test_a_key_whose_live_test_fails_is_refused_and_nothing_is_saved(alice_client, fake):
    response = alice_client.post(ADD, add_form(fake, api_key=BAD_SECRET))
    assert response.status_code == 400
    assert ProviderKey.objects.count() == 0
    html = response.content.decode()
    assert "The live test failed" in html
    assert "rejected the API key" in html
    assert "Save anyway" in html
    assert "SECRET" not in html
    # The wizard opens on the step that holds the error (the last one).
    errors = response.context["form"].errors
    assert "save_anyway" in errors


def test_save_anyway_saves_it_and_shows_its_error_on_its_row(alice_client, alice, fake):
    response = alice_client.post(ADD, add_form(fake, api_key=BAD_SECRET, save_anyway="on"))
    assert response.status_code == 302
    key = ProviderKey.objects.get()
    assert key.last_error_at is not None
    assert "rejected the API key" in key.last_error
    page = alice_client.get("/api-manager/settings/").content.decode()
    row = page.split(f'data-key-id="{key.id}"')[1].split("</tr>")[0]
    assert "rejected the API key" in row
    assert "data-key-error" in row
    assert "SECRET" not in page


def test_a_key_that_works_is_saved_with_its_models_cached(alice_client, alice, fake):
    assert alice_client.post(ADD, add_form(fake)).status_code == 302
    key = ProviderKey.objects.get()
    assert key.last_error == ""
    calls = model_calls(fake)
    body = alice_client.get(f"/api-manager/keys/{key.id}/models/").json()
    assert "gpt-4o-mini" in body["models"]
    assert model_calls(fake) == calls  # from the cache: the provider was not asked again


def test_adding_counts_as_a_live_check(alice_client, fake, settings):
    settings.PROVIDER_CHECKS_PER_MINUTE = 1
    assert alice_client.post(ADD, add_form(fake)).status_code == 302
    response = alice_client.post(ADD, add_form(fake, label="Second"))
    assert response.status_code == 429
    assert "Too many key tests" in response.content.decode()
    assert ProviderKey.objects.count() == 1


# -- the edit form ------------------------------------------------------------------------------


def test_the_owner_edits_label_model_budget_and_sharing_keeping_the_secret(
    alice_client, alice, fake
):
    key = make_key(alice, fake, label="Old")
    page = alice_client.get(f"/api-manager/keys/{key.id}/edit/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'value="Old"' in html
    assert OPENAI_SECRET not in html
    assert OPENAI_SECRET[-4:] in html  # the masked key
    calls = model_calls(fake)
    response = alice_client.post(
        f"/api-manager/keys/{key.id}/edit/",
        edit_form(
            key, label="New name", default_model="gpt-4.1", monthly_token_budget="5000", shared="on"
        ),
    )
    assert response.status_code == 302, response.content
    key.refresh_from_db()
    assert (key.label, key.default_model, key.monthly_token_budget, key.shared) == (
        "New name",
        "gpt-4.1",
        5000,
        True,
    )
    assert key.get_secret() == OPENAI_SECRET  # an empty secret keeps the old one
    assert model_calls(fake) == calls  # nothing that needs a live test changed
    event = SecurityEvent.objects.filter(kind=SecurityEventKind.KEY_EDITED).get()
    assert "label" in event.detail


def test_replacing_the_secret_tests_it_first(alice_client, alice, fake):
    key = make_key(alice, fake)
    response = alice_client.post(
        f"/api-manager/keys/{key.id}/edit/", edit_form(key, api_key=BAD_SECRET)
    )
    assert response.status_code == 400
    assert "rejected the API key" in response.content.decode()
    assert "SECRET" not in response.content.decode()
    key.refresh_from_db()
    assert key.get_secret() == OPENAI_SECRET

    response = alice_client.post(
        f"/api-manager/keys/{key.id}/edit/", edit_form(key, api_key=NEW_SECRET)
    )
    assert response.status_code == 302
    key.refresh_from_db()
    assert key.get_secret() == NEW_SECRET
    assert key.last4 == NEW_SECRET[-4:]


def test_a_failing_replacement_is_saved_anyway_only_when_asked(alice_client, alice, fake):
    key = make_key(alice, fake)
    response = alice_client.post(
        f"/api-manager/keys/{key.id}/edit/",
        edit_form(key, api_key=BAD_SECRET, save_anyway="on"),
    )
    assert response.status_code == 302
    key.refresh_from_db()
    assert key.get_secret() == BAD_SECRET
    assert "rejected the API key" in key.last_error


def test_a_key_that_works_again_loses_its_error_when_saved(alice_client, alice, fake):
    key = make_key(alice, fake)
    key.record_error("The provider rejected the API key.")
    response = alice_client.post(
        f"/api-manager/keys/{key.id}/edit/", edit_form(key, api_key=NEW_SECRET)
    )
    assert response.status_code == 302
    key.refresh_from_db()
    assert (key.last_error, key.last_error_at) == ("", None)


@pytest.mark.parametrize(
    "base_url,words",
    [
        ("http://127.0.0.1:9/v1", "public internet addresses"),
        ("http://169.254.169.254/latest", "public internet addresses"),
        ("http://user:pw@1.1.1.1/v1", "user name or password"),
        ("ftp://example.com", "http:// or https://"),
    ],
)
def test_the_edit_form_applies_the_base_url_checks(alice_client, alice, fake, base_url, words):
    key = make_key(alice, fake)
    response = alice_client.post(
        f"/api-manager/keys/{key.id}/edit/", edit_form(key, base_url=base_url)
    )
    assert response.status_code == 400
    errors = " ".join(response.context["form"].errors["base_url"])
    assert words in errors
    key.refresh_from_db()
    assert key.base_url == fake.openai_url


def test_the_edit_form_refuses_a_key_of_the_other_provider(alice_client, alice, fake):
    key = make_key(alice, fake)
    response = alice_client.post(
        f"/api-manager/keys/{key.id}/edit/", edit_form(key, api_key="sk-ant-api03-xxxxxxxxxxxx")
    )
    assert response.status_code == 400
    assert "Anthropic key" in response.content.decode()


def test_only_the_owner_may_edit(bob_client, alice, fake):
    mine = make_key(alice, fake, label="Alice's")
    shared = make_key(alice, fake, label="Team", shared=True)
    for key in (mine, shared):
        assert bob_client.get(f"/api-manager/keys/{key.id}/edit/").status_code == 404
        response = bob_client.post(
            f"/api-manager/keys/{key.id}/edit/", edit_form(key, label="Taken")
        )
        assert response.status_code == 404
    assert set(ProviderKey.objects.values_list("label", flat=True)) == {"Alice's", "Team"}


def test_the_edit_form_needs_a_csrf_token(alice, fake):
    key = make_key(alice, fake, label="Old")
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    assert (
        client.post(f"/api-manager/keys/{key.id}/edit/", edit_form(key, label="X")).status_code
        == 403
    )
    key.refresh_from_db()
    assert key.label == "Old"


def test_the_settings_page_links_the_owners_keys_to_their_edit_form(alice_client, alice, bob, fake):
    mine = make_key(alice, fake)
    theirs = make_key(bob, fake, shared=True)
    html = alice_client.get("/api-manager/settings/").content.decode()
    assert f"/api-manager/keys/{mine.id}/edit/" in html
    assert f"/api-manager/keys/{theirs.id}/edit/" not in html


# -- the model list -----------------------------------------------------------------------------


def test_the_model_list_is_for_users_who_may_use_the_key(alice_client, bob_client, alice, fake):
    private = make_key(alice, fake)
    shared = make_key(alice, fake, shared=True)
    assert bob_client.get(f"/api-manager/keys/{private.id}/models/").status_code == 404
    response = bob_client.get(f"/api-manager/keys/{shared.id}/models/")
    assert response.status_code == 200
    assert sorted(response.json()["models"]) == ["gpt-4.1", "gpt-4o", "gpt-4o-mini"]
    assert alice_client.post(f"/api-manager/keys/{shared.id}/models/").status_code == 405


def test_the_model_list_is_cached_and_refreshed_by_test(alice_client, alice, fake):
    key = make_key(alice, fake)
    first = alice_client.get(f"/api-manager/keys/{key.id}/models/").json()
    calls = model_calls(fake)
    assert alice_client.get(f"/api-manager/keys/{key.id}/models/").json() == first
    assert model_calls(fake) == calls
    # Test asks the provider and leaves its answer for the pickers.
    cache.set(f"bsepar:key-models:{key.id}", ["stale"])
    assert alice_client.post(f"/api-manager/keys/{key.id}/test/").json()["ok"] is True
    assert alice_client.get(f"/api-manager/keys/{key.id}/models/").json() == first


def test_the_model_list_is_rate_limited_like_the_test(alice_client, alice, fake, settings):
    settings.PROVIDER_CHECKS_PER_MINUTE = 1
    one, two = make_key(alice, fake), make_key(alice, fake)
    assert alice_client.get(f"/api-manager/keys/{one.id}/models/").status_code == 200
    response = alice_client.get(f"/api-manager/keys/{two.id}/models/")
    assert response.status_code == 429
    assert response["Retry-After"]
    # A cached list costs no check.
    assert alice_client.get(f"/api-manager/keys/{one.id}/models/").status_code == 200


def test_a_failing_listing_says_why_and_is_not_cached(alice_client, alice, fake):
    key = make_key(alice, fake, secret=BAD_SECRET)
    response = alice_client.get(f"/api-manager/keys/{key.id}/models/")
    assert response.status_code == 502
    body = response.json()
    assert body["models"] == []
    assert "rejected the API key" in body["error"]
    assert "SECRET" not in response.content.decode()
    assert cache.get(f"bsepar:key-models:{key.id}") is None


def test_the_composer_and_the_key_form_offer_a_datalist(alice_client, alice, fake):
    key = make_key(alice, fake)
    chat = alice_client.get("/ai-chat/").content.decode()
    assert 'list="chat-models"' in chat
    assert '<datalist id="chat-models">' in chat
    assert f'data-models-url="/api-manager/keys/{key.id}/models/"' in chat
    alice_client.get(f"/api-manager/keys/{key.id}/models/")
    edit = alice_client.get(f"/api-manager/keys/{key.id}/edit/").content.decode()
    assert 'list="model-options"' in edit
    assert '<option value="gpt-4.1">' in edit
