"""Keep provider calls off the server's own network (SSRF).

A key's base URL is chosen by any signed-in user, and the live test shows what the endpoint
answered: without this module the panel is a port scanner and a reader of internal JSON. A base
URL may only lead to public addresses, unless an administrator allowed that exact `host:port`
(settings.PROVIDER_PRIVATE_HOSTS, for a local model server). It is checked three times:

- when a key is entered (ProviderKeyForm), so a bad URL is refused with a clear message;
- before every call (api_manager.providers.get_provider), so a key saved before this check,
  or whose name now resolves elsewhere, fails with the same message;
- at connect time, by the HTTP transport handed to the SDK clients (`http_client()`): the host
  is resolved once, every address is checked, and the connection goes to a checked address
  (TLS still verifies the name), so DNS rebinding between the check and the connect finds
  nothing to exploit.

Every refusal has one message that says nothing about the target (whether it resolved, to
what, or whether a port is open).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
import ssl
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import httpx2
from django.conf import settings
from django.utils.translation import gettext_lazy
from httpx_aiohttp.httpx2 import AiohttpTransport

from api_manager.providers.base import ProviderError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

UNSAFE_MESSAGE = gettext_lazy(
    "This base URL cannot be used: the panel only connects to public internet addresses. "
    "An administrator can allow a local model server (PROVIDER_PRIVATE_HOSTS)."
)
CREDENTIALS_MESSAGE = gettext_lazy(
    "A base URL must not contain a user name or password: put the key in the API key field."
)
DEFAULT_PORTS = {"http": 80, "https": 443}
# NAT64 (RFC 6052) embeds an IPv4 address: judge the embedded one.
NAT64 = ipaddress.ip_network("64:ff9b::/96")
# How long a checked resolution is reused by one transport (seconds).
RESOLVE_TTL = 30.0


class UnsafeBaseURL(ProviderError):
    """The base URL leads somewhere the panel must not connect to."""

    def __init__(self) -> None:
        super().__init__(str(UNSAFE_MESSAGE))


def private_hosts() -> set[tuple[str, int]]:
    """settings.PROVIDER_PRIVATE_HOSTS as (lowercased host, port) pairs."""
    allowed = set()
    for entry in settings.PROVIDER_PRIVATE_HOSTS:
        host, _sep, port = entry.strip().rpartition(":")
        host = host.strip("[]").lower()
        if host and port.isdigit():
            allowed.add((host, int(port)))
    return allowed


def is_public(address: Address) -> bool:
    """True for an address on the public internet: not loopback, private, link-local (cloud
    metadata lives there), shared (100.64/10), multicast, reserved or unspecified."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return is_public(address.ipv4_mapped)
        if address in NAT64:
            return is_public(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return address.is_global and not address.is_multicast


def has_credentials(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return bool(parts.username or parts.password or "@" in parts.netloc)


def host_and_port(url: str) -> tuple[str, int]:
    """The host (lowercased, without brackets) and port of an http(s) URL; UnsafeBaseURL if
    it has none, another scheme, or credentials."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UnsafeBaseURL() from None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname or has_credentials(url):
        raise UnsafeBaseURL()
    return parts.hostname.lower(), port or DEFAULT_PORTS[parts.scheme]


def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _checked(infos: list[Any]) -> list[Address]:
    addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    if not addresses or not all(is_public(a) for a in addresses):
        raise UnsafeBaseURL()
    return addresses


def check_url(url: str) -> None:
    """Raise UnsafeBaseURL unless every address `url`'s host resolves to is public (or its
    host:port is allowed). Blocking: resolves the name."""
    host, port = host_and_port(url)
    if (host, port) in private_hosts():
        return
    literal = _literal(host)
    if literal is not None:
        if not is_public(literal):
            raise UnsafeBaseURL()
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise UnsafeBaseURL() from None
    _checked(infos)


async def acheck_url(url: str) -> list[Address] | None:
    """check_url without blocking the event loop. Returns the checked addresses, or None
    when the host is allowed as it is (PROVIDER_PRIVATE_HOSTS)."""
    host, port = host_and_port(url)
    if (host, port) in private_hosts():
        return None
    literal = _literal(host)
    if literal is not None:
        if not is_public(literal):
            raise UnsafeBaseURL()
        return [literal]
    try:
        infos = await resolve(host, port)
    except (OSError, UnicodeError):
        raise UnsafeBaseURL() from None
    return _checked(infos)


async def resolve(host: str, port: int) -> list[Any]:
    """getaddrinfo without blocking the event loop (one place, so tests can stand in a DNS
    server that changes its answer)."""
    return await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)


@functools.cache
def shared_ssl_context() -> ssl.SSLContext:
    """One TLS context (the HTTP client's default trust store) for every provider client of
    this process. Each context holds its own copy of the CA bundle in OpenSSL's memory; with one
    per SDK client, the client cache's turnover (a user testing many saved keys) grew a worker
    by ~0.5 MB per client for good (measured: +165 MB after 300 key tests, never returned),
    where a shared one levels off. An SSLContext is meant to be shared by many connections."""
    return httpx2.create_ssl_context()


def _plain_error(exc: httpx2.TransportError) -> httpx2.TransportError:
    """httpx-aiohttp reports any aiohttp connection error as a ConnectTimeout (its table maps
    their common base class so): a refused connection, or one the provider closed in the middle
    of a reply, would read "did not answer in time". Those that are no timeout become what
    httpx's own transport raises for them (ConnectError before the response, ReadError in it)."""
    cause = exc.__cause__
    if (
        isinstance(exc, httpx2.ConnectTimeout)
        and isinstance(cause, aiohttp.ClientConnectionError)
        and not isinstance(cause, (aiohttp.ServerTimeoutError, asyncio.TimeoutError))
    ):
        plain = (
            httpx2.ConnectError
            if isinstance(cause, aiohttp.ClientConnectorError)
            else httpx2.ReadError
        )
        error = plain(str(exc))
        error.__cause__ = cause
        return error
    return exc


class _ResponseStream(httpx2.AsyncByteStream):
    def __init__(self, inner: httpx2.AsyncByteStream) -> None:
        self._inner = inner

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                yield chunk
        except httpx2.TransportError as exc:
            raise _plain_error(exc) from exc.__cause__

    async def aclose(self) -> None:
        await self._inner.aclose()


class GuardedTransport(httpx2.AsyncBaseTransport):
    """An httpx transport that connects only to checked addresses (see the module docstring).

    The request goes to the checked IP address; the Host header keeps the name, and TLS sends
    and verifies the name (the `sni_hostname` extension). One transport serves one SDK client,
    i.e. one base URL, so its connection pool never mixes names on one address.

    The HTTP work is aiohttp's (httpx-aiohttp's transport, as the SDKs' documented
    `DefaultAioHttpClient` uses): its parser and stream reader cost less CPU per piece of a
    reply than httpcore's (bench/RESULTS.md, "aiohttp under the SDKs")."""

    def __init__(self, limits: httpx2.Limits | None = None) -> None:
        self._limits = limits or httpx2.Limits(max_connections=100, max_keepalive_connections=20)
        # The session is made in the event loop of the first request (aiohttp's belongs to it),
        # by `_new_session`. `verify` is the shared context only so that the transport does not
        # build a context of its own (loading the CA bundle) that the session would not use.
        self._inner = AiohttpTransport(verify=shared_ssl_context(), client=self._new_session)
        self._resolved: dict[tuple[str, int], tuple[float, list[Address] | None]] = {}

    def _new_session(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            ssl=shared_ssl_context(),
            limit=self._limits.max_connections or 0,
            keepalive_timeout=self._limits.keepalive_expiry,
        )
        return aiohttp.ClientSession(connector=connector)

    async def _addresses(self, url: httpx2.URL) -> list[Address] | None:
        host = url.host.lower()
        port = url.port or DEFAULT_PORTS.get(url.scheme, 443)
        cached = self._resolved.get((host, port))
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        addresses = await acheck_url(f"{url.scheme}://{_netloc(host, port)}/")
        self._resolved[(host, port)] = (time.monotonic() + RESOLVE_TTL, addresses)
        return addresses

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        addresses = await self._addresses(request.url)
        if addresses is not None:
            name = request.url.host
            request.url = request.url.copy_with(host=str(addresses[0]))
            if request.url.scheme == "https":
                request.extensions = {**request.extensions, "sni_hostname": name}
        try:
            response = await self._inner.handle_async_request(request)
        except httpx2.TransportError as exc:
            raise _plain_error(exc) from exc.__cause__
        response.stream = _ResponseStream(response.stream)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def http_client(
    client_class: type[httpx2.AsyncClient] = httpx2.AsyncClient,
    limits: httpx2.Limits | None = None,
) -> httpx2.AsyncClient:
    """An HTTP client for an SDK's documented `http_client=` argument, connecting only to
    checked addresses. `client_class` is the SDK's DefaultAsyncHttpxClient, so its defaults
    (timeouts, redirects) stay as the SDK expects; `limits` is the SDK's
    DEFAULT_CONNECTION_LIMITS: a client given its own transport leaves its `limits` unused,
    so the transport takes them (else httpx's own: 100 connections, so a worker's 101st
    reply on one key waited in the pool for another to end), with at most
    settings.PROVIDER_MAX_CONNECTIONS connections in place of the SDK's 1,000 (a running reply
    holds one: the 1,001st reply of a worker on one key waited for another to end)."""
    if limits is not None:
        limits = httpx2.Limits(
            max_connections=settings.PROVIDER_MAX_CONNECTIONS,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
        )
    transport = GuardedTransport(limits=limits)
    return client_class(transport=transport)
