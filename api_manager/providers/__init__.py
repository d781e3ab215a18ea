"""The provider service layer: every AI call goes through here.

`get_provider(config)` returns the adapter for `config.provider` (`openai` or `anthropic`),
managed in two ways the adapters need not know about:

- Its base URL is checked before every call (netguard): a key whose URL leads to the server's
  own network fails with one clear message, and the SDK's HTTP client connects only to checked
  addresses.
- Its SDK client comes from a bounded cache (`ClientCache`): one client per key configuration
  and event loop keeps HTTP connections alive between turns, but at most
  settings.PROVIDER_CLIENT_CACHE_SIZE of them per loop; the least recently used is closed once
  no stream still uses it. A configuration that is only being tested (`cache=False`) gets a
  client of its own, closed after the call.
"""

from __future__ import annotations

import asyncio
import importlib
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from api_manager.providers import netguard
from api_manager.providers.anthropic import AnthropicProvider
from api_manager.providers.base import (
    AuthError,
    BadRequestError,
    ChatRequest,
    Chunk,
    Provider,
    ProviderConfig,
    ProviderError,
    ProviderTimeout,
    RateLimitError,
    ToolCall,
    ToolSpec,
    Usage,
)
from api_manager.providers.openai import OpenAIProvider

REGISTRY: dict[str, type[Provider]] = {
    OpenAIProvider.name: OpenAIProvider,
    AnthropicProvider.name: AnthropicProvider,
}


@dataclass(eq=False)
class Lease:
    """A client and how many calls use it now; `evicted` once the cache let go of it."""

    client: Any
    users: int = 0
    evicted: bool = False
    cached: bool = True


# Closing tasks in flight: the event loop keeps only weak references to tasks.
_closing: set[asyncio.Task[None]] = set()


def _close_soon(lease: Lease) -> None:
    task = asyncio.get_running_loop().create_task(lease.client.close())
    _closing.add(task)
    task.add_done_callback(_closing.discard)


class ClientCache:
    """Least-recently-used SDK clients of one event loop, at most `size` of them."""

    def __init__(self) -> None:
        self.leases: OrderedDict[tuple, Lease] = OrderedDict()

    def acquire(self, provider: Provider) -> Lease:
        key = provider.config.cache_key
        lease = self.leases.get(key)
        if lease is None:
            lease = Lease(provider.make_client())
            self.leases[key] = lease
            self._evict(max(1, settings.PROVIDER_CLIENT_CACHE_SIZE))
        else:
            self.leases.move_to_end(key)
        lease.users += 1
        return lease

    def _evict(self, size: int) -> None:
        while len(self.leases) > size:
            _key, lease = self.leases.popitem(last=False)
            lease.evicted = True
            if lease.users == 0:
                _close_soon(lease)


_caches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ClientCache] = (
    weakref.WeakKeyDictionary()
)


def client_cache() -> ClientCache:
    """The running event loop's cache (connections belong to the loop that opened them)."""
    loop = asyncio.get_running_loop()
    cache = _caches.get(loop)
    if cache is None:
        cache = _caches[loop] = ClientCache()
    return cache


async def close_clients() -> None:
    """Close the running event loop's cached clients and their connections (a worker's at
    shutdown; a test's at its end): aiohttp warns of a session left open."""
    cache = _caches.pop(asyncio.get_running_loop(), None)
    if cache is not None:
        await asyncio.gather(
            *(lease.client.close() for lease in cache.leases.values()), return_exceptions=True
        )


def release(lease: Lease) -> None:
    lease.users -= 1
    if lease.users == 0 and (lease.evicted or not lease.cached):
        _close_soon(lease)


class ManagedProvider(Provider):
    """Mixed in before an adapter by `get_provider`: checks the base URL and leases the SDK
    client for the duration of each call."""

    cache_clients: bool = True
    _lease: Lease | None = None

    def client(self) -> Any:
        if self._lease is not None:
            return self._lease.client
        # Outside a call (a caller holding the client itself): the cached client, not leased,
        # so the cache may close it when it is evicted.
        if not self.cache_clients:
            return self.make_client()
        lease = client_cache().acquire(self)
        lease.users -= 1
        return lease.client

    def _acquire(self) -> Lease:
        if self.cache_clients:
            return client_cache().acquire(self)
        return Lease(self.make_client(), users=1, cached=False)

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        if self.config.base_url:
            await netguard.acheck_url(self.config.base_url)
        self._lease = self._acquire()
        inner = super().stream(request)
        try:
            async for chunk in inner:
                yield chunk
        finally:
            # Closing this generator (Stop, a gone browser) closes the adapter's stream, and
            # with it the HTTP response, before the client may be closed.
            try:
                await inner.aclose()  # type: ignore[attr-defined]
            finally:
                release(self._lease)

    async def list_models(self) -> list[str]:
        if self.config.base_url:
            await netguard.acheck_url(self.config.base_url)
        self._lease = self._acquire()
        try:
            return await super().list_models()
        finally:
            release(self._lease)


_managed: dict[tuple[type[Provider], bool], type[Provider]] = {}


def _managed_class(adapter: type[Provider], cache: bool) -> type[Provider]:
    cls = _managed.get((adapter, cache))
    if cls is None:
        cls = type(
            f"Managed{adapter.__name__}",
            (ManagedProvider, adapter),
            {"cache_clients": cache, "__module__": __name__},
        )
        _managed[(adapter, cache)] = cls
    return cls


def get_provider(config: ProviderConfig, *, cache: bool = True) -> Provider:
    """The adapter for `config`. `cache=False` for a configuration that is only being tested
    (an unsaved key): its client is not kept after the call."""
    try:
        adapter = REGISTRY[config.provider]
    except KeyError:
        raise ProviderError(f"Unknown provider {config.provider!r}.") from None
    return _managed_class(adapter, cache)(config)


__all__ = [
    "AuthError",
    "BadRequestError",
    "ChatRequest",
    "Chunk",
    "Provider",
    "ProviderConfig",
    "ProviderError",
    "RateLimitError",
    "ProviderTimeout",
    "ToolCall",
    "ToolSpec",
    "Usage",
    "get_provider",
]


def warm_up() -> None:
    """Do as a worker starts what its first reply would otherwise wait for: the TLS context
    (loading the CA bundle: ~60 ms of CPU) and the modules the SDKs and their HTTP stack import
    only when a first client is built or sends its first request (~60 ms more, a third of it
    anyio's asyncio backend, which anyio imports by name at its first use in a running loop,
    as done here). No connection is opened and no key is read: the clients built here are
    thrown away unused."""
    netguard.shared_ssl_context()
    for provider_class in REGISTRY.values():
        provider_class(ProviderConfig(provider_class.name, api_key="warm-up")).make_client()
    importlib.import_module("anyio._backends._asyncio")
