"""The client's real address, as the proxy in front of the panel saw it.

nginx (deploy/nginx.conf) overwrites `X-Real-IP` and `X-Forwarded-For` with `$remote_addr`, so
whatever a client puts in those headers never reaches the panel. The panel believes the header
only when the connection comes from a trusted proxy (`settings.TRUSTED_PROXIES`, networks,
loopback by default); from anywhere else the socket's address is the client's.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from django.conf import settings
from django.http import HttpRequest

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=8)
def _networks(proxies: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(p.strip(), strict=False) for p in proxies if p.strip())


def _address(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(value.strip())
    except ValueError:
        return None


def is_trusted_proxy(address: str) -> bool:
    ip = _address(address)
    if ip is None:
        return False
    return any(ip in net for net in _networks(tuple(settings.TRUSTED_PROXIES)))


def client_ip(request: HttpRequest) -> str | None:
    """The address of the client: `X-Real-IP` (one address, set by nginx) when the request came
    through a trusted proxy, else the connection's own address. An unusable header falls back
    to the connection's address, so no two clients fall into one empty bucket. None only for a
    request that came from no connection at all (one built in code, as test clients do)."""
    remote = request.META.get("REMOTE_ADDR", "") or ""
    # No peer address: a Unix socket, which only this machine (the proxy) can reach.
    if not remote or is_trusted_proxy(remote):
        real = _address(request.META.get("HTTP_X_REAL_IP", ""))
        if real is not None:
            return str(real)
    return remote or None
