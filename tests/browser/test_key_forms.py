"""#12.7 in real Chromium: a key whose live test fails is saved only with "save anyway" (its
error then on its row), the owner edits a key, and the model fields offer the key's models."""

from __future__ import annotations

import pytest

from api_manager.models import ProviderKey
from tests.browser.conftest import screenshot
from tests.browser.test_flows import sign_in
from tests.conftest import make_key

BAD_SECRET = "sk-bad-key-0123456789SECRET"


@pytest.mark.parametrize(("language", "phone"), [("en", False), ("fa", True)])
def test_a_failing_key_needs_save_anyway_and_its_edit_form_offers_models(
    live_asgi, open_page, alice, fake, language, phone
):
    page = open_page(language, phone)
    sign_in(page, live_asgi.url)
    page.goto(f"{live_asgi.url}/api-manager/settings/")
    page.check("input[name=provider][value=openai]")
    page.click("[data-step='1'] [data-next]")
    page.fill("#id_label", "Broken key")
    page.fill("#id_api_key", BAD_SECRET)
    page.fill("#id_base_url", fake.openai_url)
    page.click("[data-step='2'] [data-next]")
    page.click("[data-step='3'] button[type=submit]")
    # Refused: the page comes back on the last step with the provider's reason.
    error = page.locator("[data-step='3'] .errorlist")
    error.wait_for()
    assert page.is_visible("[data-step='3']")
    assert not ProviderKey.objects.exists()
    assert "SECRET" not in page.content()
    screenshot(page, f"{language}-keys-live-test-refused")
    # The secret is never sent back: paste it again, tick "save anyway", save.
    page.click("[data-step='3'] [data-back]")
    page.fill("#id_api_key", BAD_SECRET)
    page.click("[data-step='2'] [data-next]")
    page.check("#id_save_anyway")
    page.click("[data-step='3'] button[type=submit]")
    page.locator(".flash").first.wait_for()
    key = ProviderKey.objects.get(label="Broken key")
    row = page.locator(f"[data-key-id='{key.id}']")
    assert row.locator("[data-key-error]").inner_text().strip() == key.last_error
    assert key.last_error

    # The edit form: a working secret replaces the broken one; the model field offers models.
    good = make_key(alice, fake, label="Good key")
    page.goto(f"{live_asgi.url}/api-manager/keys/{good.id}/edit/")
    page.wait_for_function("() => document.querySelectorAll('#model-options option').length > 0")
    assert page.get_attribute("#id_default_model", "list") == "model-options"
    page.fill("#id_label", "Renamed key")
    page.fill("#id_default_model", "gpt-4.1")
    screenshot(page, f"{language}-keys-edit")
    page.click("#key-edit button[type=submit]")
    page.locator(f"[data-key-id='{good.id}']", has_text="Renamed key").wait_for()
    good.refresh_from_db()
    assert (good.label, good.default_model) == ("Renamed key", "gpt-4.1")

    # The composer's model field offers the selected key's models.
    page.goto(f"{live_asgi.url}/ai-chat/")
    page.select_option("select[name=key]", str(good.id))
    page.focus("#chat-model")
    page.wait_for_function("() => document.querySelectorAll('#chat-models option').length > 0")
    models = page.eval_on_selector_all("#chat-models option", "os => os.map(o => o.value)")
    assert "gpt-4o-mini" in models
    # The refused form itself is answered 400 (the contract): the only console error.
    errors = [e for e in page.watch.errors if "status of 400" not in e]
    assert errors == [], errors
