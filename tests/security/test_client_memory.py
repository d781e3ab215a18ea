"""Provider clients share one TLS context: with one per SDK client, the client cache's
turnover (one user testing many saved keys) grew a worker for good, ~0.5 MB per client
(tests/security/test_stack_attacks.py measures it through the real stack)."""

from __future__ import annotations

import gc
import ssl

from api_manager.providers import ProviderConfig, get_provider
from tests.conftest import OPENAI_SECRET


def live_ssl_contexts() -> int:
    gc.collect()
    # type(), not isinstance(): isinstance asks a lazy object (a past request's CSP nonce) for
    # its __class__, which evaluates it.
    return sum(1 for o in gc.get_objects() if issubclass(type(o), ssl.SSLContext))


async def test_clients_for_many_keys_share_one_tls_context(fake):
    # The first client makes the shared context (and whatever the SDK makes once per process):
    # measured after it, so the test does not depend on which tests ran before.
    first = get_provider(ProviderConfig("openai", OPENAI_SECRET, fake.openai_url), cache=False)
    await first.make_client().close()
    before = live_ssl_contexts()
    providers = [
        get_provider(ProviderConfig("openai", f"{OPENAI_SECRET}{n}", fake.openai_url), cache=False)
        for n in range(20)
    ]
    clients = [provider.make_client() for provider in providers]
    # One per client would be 20 more; at most one other is made once per process.
    assert live_ssl_contexts() - before <= 1
    for client in clients:
        await client.close()


async def test_a_shared_context_still_verifies_certificates(fake):
    from api_manager.providers import netguard

    context = netguard.shared_ssl_context()
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
