"""Key management pages and actions. Thin: fetch, call a model or the provider layer, answer."""

from __future__ import annotations

import logging

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables
from django.views.decorators.http import require_GET, require_POST

from api_manager import live, stats
from api_manager.forms import ProviderKeyForm
from api_manager.limits import TooManyChecks, count_provider_check
from api_manager.models import ProviderKey, UsageRollup
from api_manager.providers import ProviderConfig, ProviderError, get_provider
from core import crypto
from core.charts import stacked_bars
from core.http import AuthenticatedHttpRequest

logger = logging.getLogger(__name__)


def _get_key_for_user(request: AuthenticatedHttpRequest, pk: int) -> ProviderKey:
    """The key `pk` if the signed-in user owns it; Http404 otherwise."""
    try:
        return ProviderKey.objects.get(pk=pk, owner=request.user)
    except ProviderKey.DoesNotExist:
        raise Http404("No such key") from None


def _settings_context(
    request: AuthenticatedHttpRequest, form: ProviderKeyForm
) -> dict[str, object]:
    # Query: the keys with this month's tokens (one query with a join and a sum) and their owners.
    keys = list(
        ProviderKey.objects.usable_by(request.user).with_month_tokens().select_related("owner")
    )
    return {"page": "keys", "keys": keys, "form": form}


@require_GET
def settings_page(request: AuthenticatedHttpRequest) -> HttpResponse:
    return render(
        request, "api_manager/settings.html", _settings_context(request, ProviderKeyForm())
    )


@require_POST
def toggle_key(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    key = _get_key_for_user(request, pk)
    key.toggle()
    if key.is_active:
        messages.success(request, _("Key “%(label)s” enabled.") % {"label": key.label})
    else:
        messages.success(request, _("Key “%(label)s” disabled.") % {"label": key.label})
    return HttpResponseRedirect(reverse("api_manager:settings"))


@require_POST
def delete_key(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    key = _get_key_for_user(request, pk)
    label = key.label
    # Usage records keep their key label; their key link becomes empty.
    key.delete()
    messages.success(
        request, _("Key “%(label)s” deleted. Its usage history is kept.") % {"label": label}
    )
    return HttpResponseRedirect(reverse("api_manager:settings"))


def _too_many(exc: TooManyChecks) -> JsonResponse:
    response = JsonResponse({"ok": False, "error": exc.message, "code": "rate_limit"}, status=429)
    response["Retry-After"] = str(exc.retry_after)
    return response


async def _list_models(config: ProviderConfig, *, cache: bool = True) -> dict[str, object]:
    """The test answer: `{"ok": true, "models": [...]}` or `{"ok": false, "error": ..., "code": ...}`."""
    try:
        models = await get_provider(config, cache=cache).list_models()
    except ProviderError as exc:
        return {"ok": False, "error": exc.message, "code": exc.code}
    return {"ok": True, "models": models}


@require_POST
@sensitive_variables("config")
async def test_key(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    """Test a saved key: list the provider's models, or say in plain words what is wrong."""
    user = await request.auser()
    try:
        key = await ProviderKey.objects.aget(pk=pk, owner=user)
    except ProviderKey.DoesNotExist:
        raise Http404("No such key") from None
    try:
        await sync_to_async(count_provider_check)(user.pk)
    except TooManyChecks as exc:
        return _too_many(exc)
    try:
        config = key.provider_config()
    except crypto.DecryptionError:
        return JsonResponse(
            {"ok": False, "error": _("This key is unreadable: enter it again."), "code": "auth"}
        )
    result = await _list_models(config)
    if result["ok"]:
        # The test refreshes the list the model pickers offer.
        await sync_to_async(live.remember_models)(key.pk, result["models"])
        await sync_to_async(key.record_success)()
    else:
        await sync_to_async(key.record_error)(str(result["error"]))
    return JsonResponse(result)


@sensitive_post_parameters("api_key")
@require_POST
@sensitive_variables("data", "config")
async def check_new_key(request: AuthenticatedHttpRequest) -> HttpResponse:
    """The wizard's live test: validate the unsaved form and list the provider's models.
    The key is only being tried: its SDK client is closed after the call, never cached."""
    user = await request.auser()
    try:
        await sync_to_async(count_provider_check)(user.pk)
    except TooManyChecks as exc:
        return _too_many(exc)
    form = ProviderKeyForm(request.POST, require_label=False)
    if not await sync_to_async(form.is_valid)():
        errors = {name: [str(e) for e in errs] for name, errs in form.errors.items()}
        first = next(iter(errors.values()))[0]
        return JsonResponse({"ok": False, "error": first, "errors": errors}, status=400)
    data = form.cleaned_data
    config = ProviderConfig(
        provider=data["provider"],
        api_key=data["api_key"],
        base_url=data["base_url"],
        timeout=min(settings.PROVIDER_TIMEOUT, 20.0),
        max_retries=0,
    )
    return JsonResponse(await _list_models(config, cache=False))


@require_GET
def key_usage(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    # Queries: the key (owned or shared), then one aggregate over its daily rollups.
    try:
        key = ProviderKey.objects.usable_by(request.user).get(pk=pk)
    except ProviderKey.DoesNotExist:
        raise Http404("No such key") from None
    days = stats.daily(UsageRollup.objects.filter(key=key))
    chart = stacked_bars(
        [d.date for d in days],
        [
            (_("input tokens"), [d.input_tokens for d in days]),
            (_("output tokens"), [d.output_tokens for d in days]),
        ],
    )
    context = {
        "page": "keys",
        "key": key,
        # The table lists the days with usage; the chart shows all thirty.
        "days": list(reversed(stats.with_usage(days))),
        "total": stats.totals(days),
        "chart": chart,
    }
    return render(request, "api_manager/usage.html", context)
