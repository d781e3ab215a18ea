"""Live checks of a key against its provider, and the model lists they leave in the cache.

A live test lists the provider's models. The lists are kept in the cache every worker shares
(`remember_models`), so the key form and the chat's model pickers offer them without calling
the provider again; a successful test, on the settings page or when a key is saved, refreshes
them. Every call that reaches a provider here is counted by `limits.count_provider_check`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.conf import settings
from django.core.cache import cache
from django.views.decorators.debug import sensitive_variables

from api_manager.providers import ProviderConfig, ProviderError, get_provider

MODELS_CACHE_SECONDS = 6 * 60 * 60
MAX_MODELS = 500


@dataclass
class LiveResult:
    """A live test's outcome: the models, or the provider's safe-to-show error."""

    models: list[str] = field(default_factory=list)
    error: str = ""
    code: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


def _cache_key(key_id: int) -> str:
    return f"bsepar:key-models:{key_id}"


def remember_models(key_id: int, models: list[str]) -> None:
    cache.set(_cache_key(key_id), list(models)[:MAX_MODELS], MODELS_CACHE_SECONDS)


def cached_models(key_id: int) -> list[str] | None:
    """The key's models as last listed, or None when they are not in the cache."""
    models = cache.get(_cache_key(key_id))
    return models if isinstance(models, list) else None


def forget_models(key_id: int) -> None:
    cache.delete(_cache_key(key_id))


@sensitive_variables("api_key", "config")
def check_config(provider: str, api_key: str, base_url: str) -> ProviderConfig:
    """The configuration a key being saved is tested with: short, no retries."""
    return ProviderConfig(
        provider=provider,
        api_key=api_key,
        base_url=base_url,
        timeout=min(settings.PROVIDER_TIMEOUT, 20.0),
        max_retries=0,
    )


async def live_test(config: ProviderConfig, *, keep_client: bool = False) -> LiveResult:
    """List the provider's models with `config`; a ProviderError becomes the result's error.
    The caller has counted the check (limits.count_provider_check)."""
    try:
        models = await get_provider(config, cache=keep_client).list_models()
    except ProviderError as exc:
        return LiveResult(error=exc.message, code=exc.code)
    return LiveResult(models=list(models))
