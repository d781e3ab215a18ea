"""Personas and shared fixtures: alice (owner), bob (another user), an admin."""

from __future__ import annotations

import inspect
import os

import pytest
from django.contrib.auth.models import User
from django.test import Client

PASSWORD = "correct horse battery staple"


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Each test starts with an empty cache (sessions, the tools offered, ...)."""
    from django.core.cache import cache

    cache.clear()
    yield


@pytest.fixture
async def close_provider_clients():
    """Closes the provider clients cached in the test's event loop when it ends (their
    aiohttp sessions would be reported unclosed)."""
    yield
    from api_manager.providers import close_clients

    await close_clients()


@pytest.fixture(autouse=True)
def _provider_clients_of_async_tests(request):
    """Each async test runs in an event loop of its own, which ends with it: the provider
    clients it cached are closed first. (Only async tests: a sync one may run an event loop
    of its own throughout, as the browser tests' Playwright does.)"""
    if inspect.iscoroutinefunction(request.function):
        request.getfixturevalue("close_provider_clients")


@pytest.fixture
def alice(db) -> User:
    return User.objects.create_user("alice", "alice@example.com", PASSWORD)


@pytest.fixture
def bob(db) -> User:
    return User.objects.create_user("bob", "bob@example.com", PASSWORD)


@pytest.fixture
def admin_user(db) -> User:
    return User.objects.create_superuser("admin", "admin@example.com", PASSWORD)


def signed_in(user: User) -> Client:
    """A test client signed in as `user`."""
    client = Client()
    client.force_login(user)
    return client


def user_with_permissions(username: str, *codenames: str) -> User:
    """A user granted the given permissions (fetched again: permissions are cached)."""
    from django.contrib.auth.models import Permission

    user = User.objects.create_user(username, password=PASSWORD)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return User.objects.get(pk=user.pk)


@pytest.fixture
def alice_client(alice) -> Client:
    return signed_in(alice)


@pytest.fixture
def bob_client(bob) -> Client:
    return signed_in(bob)


@pytest.fixture
def admin_client(admin_user) -> Client:
    return signed_in(admin_user)


@pytest.fixture(scope="session")
def fake_provider():
    """The local fake OpenAI/Anthropic server, shared by the session (reset per test)."""
    from django.conf import settings

    from tests.fakes.server import FakeProviderServer

    # On the port tests/settings.py allowed in PROVIDER_PRIVATE_HOSTS; should something have
    # taken it meanwhile, on another one, allowed instead (here and for panels started later).
    try:
        server = FakeProviderServer(port=int(os.environ["FAKE_PROVIDER_PORT"])).start()
    except (OSError, RuntimeError):
        server = FakeProviderServer().start()
        allowed = f"127.0.0.1:{server.port}"
        os.environ["PROVIDER_PRIVATE_HOSTS"] = allowed
        settings.PROVIDER_PRIVATE_HOSTS = [allowed]
    yield server
    server.stop()


@pytest.fixture
def workspace(tmp_path, settings):
    """A FILE_ACTIONS_ROOT with one file, for the append action's tests."""
    root = tmp_path / "ws"
    root.mkdir()
    (root / "notes.md").write_text("# Notes\n")
    settings.FILE_ACTIONS_ROOT = str(root)
    return root


@pytest.fixture
def served_alice(alice, settings):
    """alice, with a password hash the production settings of the servers that tests/stack.py
    starts can check (tests use MD5); the test's own settings check it too."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    alice.set_password(PASSWORD)
    alice.save(update_fields=["password"])
    return alice


@pytest.fixture(scope="session")
def static_root():
    """collectstatic once, for every test that serves the real stack (tests/stack.py)."""
    from tests import stack

    with stack.static_files() as root:
        yield root


@pytest.fixture
def fake(fake_provider):
    fake_provider.reset()
    fake_provider.word_delay = 0.002
    fake_provider.slow_first_token = 3.0
    fake_provider.long_words = 400
    return fake_provider


OPENAI_SECRET = "sk-proj-alicesecretkey0000000000000000wxyz"
ANTHROPIC_SECRET = "sk-ant-api03-alicesecretkey00000000000000abcd"


def make_key(owner, fake=None, *, provider="openai", secret=None, **fields):
    """A saved ProviderKey pointing at the fake server (or nowhere)."""
    from api_manager.models import ProviderKey

    key = ProviderKey(
        owner=owner,
        provider=provider,
        label=fields.pop("label", f"{provider} key"),
        base_url=fields.pop("base_url", None)
        or ((fake.openai_url if provider == "openai" else fake.anthropic_url) if fake else ""),
        default_model=fields.pop(
            "default_model", "gpt-4o-mini" if provider == "openai" else "claude-test-sonnet"
        ),
        **fields,
    )
    key.set_secret(secret or (OPENAI_SECRET if provider == "openai" else ANTHROPIC_SECRET))
    key.save()
    return key


@pytest.fixture(autouse=True, scope="session")
def _close_async_thread_connections(django_db_setup, django_db_blocker):
    """Async tests run ORM calls in asgiref's shared sync thread; close its connection before
    the test database is dropped (PostgreSQL refuses to drop a database in use)."""
    yield
    from asgiref.sync import SyncToAsync
    from django.db import connections

    with django_db_blocker.unblock():
        SyncToAsync.single_thread_executor.submit(connections.close_all).result()
