"""#12.8: "needs attention" only for keys the user can fix and that still fail; unpriced models
show "no price"; the usage page lists only the days with usage."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from django.utils import timezone

from api_manager.models import ModelPrice, UsageRecord
from tests.conftest import make_key

ATTENTION = "Keys that need attention"


def usage(key, user, model, tokens=(10, 20), cost="0", days_ago=0, count=1):
    when = timezone.now() - dt.timedelta(days=days_ago)
    UsageRecord.objects.bulk_create(
        UsageRecord(
            key=key,
            key_label=key.label,
            user=user,
            provider=key.provider,
            model=model,
            input_tokens=tokens[0],
            output_tokens=tokens[1],
            cost=Decimal(cost),
            created_at=when,
        )
        for _ in range(count)
    )


def test_a_one_off_error_clears_once_the_key_works_again(alice_client, alice):
    key = make_key(alice, label="Flaky key")
    key.record_error("The provider timed out.")
    html = alice_client.get("/").content.decode()
    assert ATTENTION in html
    assert "The provider timed out." in html

    key.record_success()  # a later call worked
    html = alice_client.get("/").content.decode()
    assert ATTENTION not in html

    key.record_error("The provider rejected the API key.")  # failing again
    assert ATTENTION in alice_client.get("/").content.decode()


def test_users_see_no_alert_about_a_shared_key_they_cannot_fix(alice_client, bob_client, alice):
    key = make_key(alice, label="Team key", shared=True, monthly_token_budget=10)
    key.record_error("The provider rejected the API key.")
    usage(key, alice, "gpt-4o-mini", tokens=(10, 10))
    assert ATTENTION in alice_client.get("/").content.decode()
    html = bob_client.get("/").content.decode()
    assert ATTENTION not in html
    assert "rejected the API key" not in html
    assert "near its monthly budget" not in html


def test_unpriced_models_show_no_price_instead_of_zero_dollars(alice_client, alice):
    ModelPrice.objects.all().delete()
    key = make_key(alice)
    usage(key, alice, "local-llama", tokens=(100, 100))
    html = alice_client.get("/").content.decode()
    card = html.split("OpenAI tokens this month")[1].split("</div></div>")[0]
    assert "no price" in card
    assert "$0.0000" not in card
    page = alice_client.get(f"/api-manager/keys/{key.id}/usage/").content.decode()
    assert "no price" in page
    assert "$0.0000" not in page


def test_priced_models_show_their_cost_and_a_mix_says_so(alice_client, alice, admin_client):
    ModelPrice.objects.all().delete()
    ModelPrice.objects.create(
        provider="openai", model="gpt-4o", input_per_million=1, output_per_million=1
    )
    key = make_key(alice)
    usage(key, alice, "gpt-4o-mini", cost="0.0300")  # priced by its prefix
    html = alice_client.get("/").content.decode()
    assert "$0.0300" in html
    assert "no price" not in html
    assert "without a price" not in html
    usage(key, alice, "local-llama")
    html = alice_client.get("/").content.decode()
    assert "$0.0300" in html
    assert "models without a price" in html
    # The team table (admins) says the same.
    team = admin_client.get("/").content.decode()
    assert "models without a price" in team


def test_the_usage_page_lists_only_the_days_with_usage(alice_client, alice):
    key = make_key(alice)
    usage(key, alice, "gpt-4o-mini", days_ago=0, cost="0.01")
    usage(key, alice, "gpt-4o-mini", days_ago=3, cost="0.01")
    response = alice_client.get(f"/api-manager/keys/{key.id}/usage/")
    assert len(response.context["days"]) == 2
    html = response.content.decode()
    table = html.split("<tbody>")[-1].split("</tbody>")[0]
    assert table.count("<tr>") == 2
    assert "<rect" in html  # the chart is still there


def test_no_price_is_decided_when_the_call_is_recorded_and_pages_do_not_match_prices(
    alice_client, admin_client, alice
):
    """A call's cost is estimated when it is recorded; so is whether there was a price. A price
    added later does not turn old usage into "$0.0000", and the usage pages read "no price"
    from the rollups: none of their queries matches rows against the price table (which cost
    a subquery per rollup row, the dashboard's growth with usage)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    ModelPrice.objects.all().delete()
    key = make_key(alice)
    usage(key, alice, "local-llama", tokens=(100, 100))
    ModelPrice.objects.create(
        provider="openai", model="local-llama", input_per_million=1, output_per_million=1
    )
    price_table = ModelPrice._meta.db_table
    for client, url in [
        (alice_client, "/"),
        (admin_client, "/"),  # with the team's usage
        (alice_client, f"/api-manager/keys/{key.id}/usage/"),
    ]:
        with CaptureQueriesContext(connection) as queries:
            html = client.get(url).content.decode()
        if url == "/":  # the OpenAI card (the Anthropic card, without usage, says $0.0000)
            html = html.split("OpenAI tokens this month")[1].split("</div></div>")[0]
        assert "no price" in html, url
        assert "$0.0000" not in html, url
        assert not [q for q in queries.captured_queries if price_table in q["sql"]], url
    # Calls recorded from now on have the price.
    usage(key, alice, "local-llama", tokens=(1_000_000, 0), cost="1")
    html = alice_client.get("/").content.decode()
    assert "$1.00 " in html and "models without a price" in html
