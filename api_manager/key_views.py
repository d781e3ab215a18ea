"""Saving a key after a live test (add, edit) and the model list of a key.

A key is tested against its provider before it is saved; one whose test failed is refused
unless the user ticked "save anyway", and is then saved with that error on its row. The
listed models are kept in the shared cache (api_manager.live) for the model pickers.
"""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import sync_to_async
from django.contrib import messages
from django.http import Http404, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from api_manager import live
from api_manager.forms import ProviderKeyForm
from api_manager.key_forms import KeyEditForm
from api_manager.limits import TooManyChecks, count_provider_check
from api_manager.models import ProviderKey
from core import crypto
from core.http import AuthenticatedHttpRequest

logger = logging.getLogger(__name__)


def _settings_context(user: Any, form: ProviderKeyForm) -> dict[str, object]:
    # Query: the keys with this month's tokens (one query with a join and a sum) and their owners.
    keys = list(ProviderKey.objects.usable_by(user).with_month_tokens().select_related("owner"))
    return {"page": "keys", "keys": keys, "form": form}


async def _render(
    request: AuthenticatedHttpRequest, template: str, context: dict[str, Any], status: int
) -> HttpResponse:
    return await sync_to_async(render)(request, template, context, status=status)


@sensitive_variables("api_key", "config")
async def _test_before_saving(
    user: Any, form: ProviderKeyForm, provider: str, api_key: str, base_url: str
) -> tuple[live.LiveResult | None, int]:
    """Test the key live; on a refusal put the reason on the form and return its status
    (429: too many checks; 400: the test failed and "save anyway" is not ticked)."""
    try:
        await sync_to_async(count_provider_check)(user.pk)
    except TooManyChecks as exc:
        form.add_error(None, exc.message)
        return None, 429
    result = await live.live_test(live.check_config(provider, api_key, base_url))
    if not result.ok and not form.cleaned_data.get("save_anyway"):
        form.add_error(
            "save_anyway",
            _("The live test failed: %(error)s Tick “Save anyway” to save the key all the same.")
            % {"error": result.error},
        )
        return result, 400
    return result, 200


def _after_test(key: ProviderKey, result: live.LiveResult) -> None:
    """Show the test's outcome on the key's row, and keep its models for the pickers."""
    if result.ok:
        live.remember_models(key.pk, result.models)
        if key.last_error_at:
            key.last_error_at, key.last_error = None, ""
            key.save(update_fields=["last_error_at", "last_error"])
    else:
        live.forget_models(key.pk)
        key.record_error(result.error)


@sensitive_post_parameters("api_key")
@require_POST
@sensitive_variables("data")
async def add_key(request: AuthenticatedHttpRequest) -> HttpResponse:
    user = await request.auser()
    form = ProviderKeyForm(request.POST)
    status = 200 if await sync_to_async(form.is_valid)() else 400
    result = None
    if status == 200:
        data = form.cleaned_data
        result, status = await _test_before_saving(
            user, form, data["provider"], data["api_key"], data["base_url"]
        )
    if status != 200 or result is None:
        context = await sync_to_async(_settings_context)(user, form)
        return await _render(request, "api_manager/settings.html", context, status)
    key = ProviderKey(
        owner=user,
        provider=data["provider"],
        label=data["label"],
        base_url=data["base_url"],
        default_model=data["default_model"],
        shared=data["shared"],
        monthly_token_budget=data["monthly_token_budget"],
    )
    key.set_secret(data["api_key"])
    await sync_to_async(key.save)()
    await sync_to_async(_after_test)(key, result)
    logger.info("user %s added %s key %s", user.pk, key.provider, key.pk)
    if result.ok:
        messages.success(request, _("Key “%(label)s” added.") % {"label": key.label})
    else:
        messages.warning(
            request,
            _("Key “%(label)s” saved, but its live test failed: %(error)s")
            % {"label": key.label, "error": result.error},
        )
    return HttpResponseRedirect(reverse("api_manager:settings"))


async def _owned_key(user: Any, pk: int) -> ProviderKey:
    """The key `pk` if `user` owns it; Http404 otherwise (a shared key is not theirs to edit)."""
    try:
        return await ProviderKey.objects.aget(pk=pk, owner=user)
    except ProviderKey.DoesNotExist:
        raise Http404("No such key") from None


def _edit_context(key: ProviderKey, form: KeyEditForm) -> dict[str, object]:
    return {"page": "keys", "key": key, "form": form, "models": live.cached_models(key.pk) or []}


@sensitive_post_parameters("api_key")
@require_http_methods(["GET", "POST"])
@sensitive_variables("data", "secret")
async def edit_key(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    """Edit a key's label, base URL, default model, budget and sharing, or replace its secret
    (an empty secret keeps the stored one). A new secret or base URL is tested live first."""
    user = await request.auser()
    key = await _owned_key(user, pk)
    if request.method == "GET":
        form = KeyEditForm(key=key)
        return await _render(request, "api_manager/edit.html", _edit_context(key, form), 200)
    form = KeyEditForm(request.POST, key=key)
    if not await sync_to_async(form.is_valid)():
        return await _render(request, "api_manager/edit.html", _edit_context(key, form), 400)
    data = form.cleaned_data
    changed = form.changes()
    secret = data["api_key"]
    result = None
    if secret or "base_url" in changed:
        if not secret:
            try:
                secret = key.get_secret()
            except crypto.DecryptionError:
                form.add_error("api_key", _("This key is unreadable: enter it again."))
                return await _render(
                    request, "api_manager/edit.html", _edit_context(key, form), 400
                )
        result, status = await _test_before_saving(
            user, form, key.provider, secret, data["base_url"]
        )
        if status != 200:
            return await _render(request, "api_manager/edit.html", _edit_context(key, form), status)
    for name in changed:
        setattr(key, name, data[name])
    if data["api_key"]:
        key.set_secret(data["api_key"])
        changed += ["secret_encrypted", "last4"]
    if changed:
        await sync_to_async(key.save)(update_fields=changed)
    if result is not None:
        await sync_to_async(_after_test)(key, result)
    if result is not None and not result.ok:
        messages.warning(
            request,
            _("Key “%(label)s” saved, but its live test failed: %(error)s")
            % {"label": key.label, "error": result.error},
        )
    else:
        messages.success(request, _("Key “%(label)s” saved.") % {"label": key.label})
    return HttpResponseRedirect(reverse("api_manager:settings"))


@require_GET
@sensitive_variables("config")
async def key_models(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    """`{"models": [...]}`: the models the key's provider lists, for anyone who may use the key.
    From the shared cache when a test or an earlier call left them there; otherwise the
    provider is asked (counted like a test; its failure is `{"models": [], "error": ...}`)."""
    user = await request.auser()
    try:
        key = await ProviderKey.objects.usable_by(user).aget(pk=pk)
    except ProviderKey.DoesNotExist:
        raise Http404("No such key") from None
    models = await sync_to_async(live.cached_models)(key.pk)
    if models is not None:
        return JsonResponse({"models": models})
    try:
        await sync_to_async(count_provider_check)(user.pk)
    except TooManyChecks as exc:
        response = JsonResponse({"models": [], "error": exc.message}, status=429)
        response["Retry-After"] = str(exc.retry_after)
        return response
    try:
        config = key.provider_config()
    except crypto.DecryptionError:
        return JsonResponse(
            {"models": [], "error": _("This key is unreadable: enter it again.")}, status=502
        )
    result = await live.live_test(config, keep_client=True)
    if not result.ok:
        return JsonResponse({"models": [], "error": result.error}, status=502)
    await sync_to_async(live.remember_models)(key.pk, result.models)
    return JsonResponse({"models": result.models})
