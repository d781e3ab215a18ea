"""System checks about provider keys."""

from __future__ import annotations

from typing import Any

from django.core.checks import Warning, register

from api_manager.providers import netguard


@register("security", "database")
def unsafe_base_urls(app_configs: Any = None, databases: Any = None, **kwargs: Any) -> list:
    """A Warning per saved key whose base URL is refused now (api_manager/providers/netguard.py):
    it was saved before the check existed, or its name now resolves to a private address. Such
    a key fails at turn time with the same message. Runs when checks are given a database
    (`manage.py check --database default`, `migrate`), since it reads the keys and resolves
    their hosts."""
    if not databases:
        return []
    from django.db import connections

    from api_manager.models import ProviderKey

    warnings = []
    for database in databases:
        # `migrate` runs its checks before it migrates: on a fresh database there is no table yet.
        if ProviderKey._meta.db_table not in connections[database].introspection.table_names():
            continue
        keys = ProviderKey.objects.using(database).exclude(base_url="")
        for pk, label, owner, url in keys.values_list("pk", "label", "owner__username", "base_url"):
            try:
                netguard.check_url(url)
            except netguard.UnsafeBaseURL:
                warnings.append(
                    Warning(
                        f"Key {pk} (“{label}” of {owner}) has a base URL the panel refuses: it "
                        "leads to a loopback, private, link-local or metadata address, or "
                        "holds credentials. Calls with it fail until its owner replaces it, or "
                        "an administrator allows the host:port in PROVIDER_PRIVATE_HOSTS.",
                        obj=f"ProviderKey {pk}",
                        id="api_manager.W001",
                    )
                )
    return warnings
