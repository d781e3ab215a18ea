"""#12.8 in real Chromium, in both languages: a recovered key needs no attention, a shared key's
error is not shown to users who cannot fix it, unpriced usage says "no price", and the usage
page lists only the days with usage."""

from __future__ import annotations

import pytest
from django.utils import translation
from django.utils.translation import gettext

from api_manager.models import ModelPrice
from tests.browser.conftest import screenshot
from tests.browser.test_flows import sign_in
from tests.conftest import make_key
from tests.dashboard.test_attention_and_prices import usage


@pytest.mark.parametrize(("language", "phone"), [("en", False), ("fa", True)])
def test_the_dashboard_and_usage_page_say_what_is_true(
    live_asgi, open_page, alice, bob, language, phone
):
    ModelPrice.objects.all().delete()
    recovered = make_key(alice, label="Recovered key")
    recovered.record_error("The provider timed out.")
    recovered.record_success()
    shared = make_key(bob, label="Bob's team key", shared=True)
    shared.record_error("The provider rejected the API key.")
    usage(recovered, alice, "local-llama", days_ago=2)
    with translation.override(language):
        no_price = gettext("no price")

    page = open_page(language, phone)
    sign_in(page, live_asgi.url)
    page.goto(f"{live_asgi.url}/")
    assert page.locator(".attention").count() == 0
    assert no_price in page.locator("[data-no-price]").first.inner_text()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= (390 if phone else 1280)
    screenshot(page, f"{language}-dashboard-no-price")

    page.goto(f"{live_asgi.url}/api-manager/keys/{recovered.id}/usage/")
    assert page.locator("table tbody tr").count() == 1
    assert page.locator("svg rect").count() > 0
    screenshot(page, f"{language}-key-usage-days")
    assert page.watch.errors == [], page.watch.errors
