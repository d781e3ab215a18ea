"""A provider (or anything at a key's base URL) answering with a redirect: the SDK clients
follow redirects, so each hop must pass the same SSRF check, and a key must not follow a
redirect to another origin."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from api_manager.providers import ProviderConfig, ProviderError, get_provider
from tests.conftest import ANTHROPIC_SECRET, OPENAI_SECRET

SECRETS = {"openai": OPENAI_SECRET, "anthropic": ANTHROPIC_SECRET}


class Redirector:
    """Answers every request with a 307 to `target` + the request's path after `/v1`."""

    def __init__(self, target: str) -> None:
        seen: list[dict[str, str]] = []
        self.seen = seen

        class Handler(BaseHTTPRequestHandler):
            def _redirect(self) -> None:
                seen.append({k.lower(): v for k, v in self.headers.items()})
                self.send_response(307)
                self.send_header("Location", target + self.path.split("/v1", 1)[-1])
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = _redirect

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def redirector(settings) -> Iterator[callable]:
    made: list[Redirector] = []

    def make(target: str) -> Redirector:
        server = Redirector(target)
        # The redirector stands for an allowed local model server.
        settings.PROVIDER_PRIVATE_HOSTS = [
            *settings.PROVIDER_PRIVATE_HOSTS,
            f"127.0.0.1:{server.port}",
        ]
        made.append(server)
        return server

    yield make
    for server in made:
        server.close()


def config(provider: str, port: int) -> ProviderConfig:
    return ProviderConfig(
        provider, SECRETS[provider], f"http://127.0.0.1:{port}/v1", timeout=5, max_retries=0
    )


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_a_redirect_to_a_loopback_address_is_refused(fake, redirector, provider):
    # The fake answers on 127.0.0.1:<port> (allowed); `localhost` at the same port is not.
    hop = redirector(f"http://localhost:{fake.port}/v1")
    with pytest.raises(ProviderError):
        await get_provider(config(provider, hop.port), cache=False).list_models()
    assert len(hop.seen) == 1
    assert fake.requests == []


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_a_redirect_to_another_origin_does_not_carry_the_key(fake, redirector, provider):
    hop = redirector(f"http://127.0.0.1:{fake.port}/v1")
    with pytest.raises(ProviderError):
        await get_provider(config(provider, hop.port), cache=False).list_models()
    assert any(SECRETS[provider] in v for v in hop.seen[0].values())  # the endpoint got it ...
    assert [seen.api_key_last4 for seen in fake.requests] in ([], [""])  # ... the next hop not
