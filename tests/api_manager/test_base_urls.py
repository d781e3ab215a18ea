"""Base URLs may not reach the server's own network (api_manager/providers/netguard.py): refused
when entered, before every call, and at connect time; one message that reveals nothing."""

from __future__ import annotations

import socket

import pytest
from django.core.management import call_command

from ai_chat.models import Message
from api_manager.models import ProviderKey
from api_manager.providers import ProviderConfig, ProviderError, get_provider, netguard
from tests.ai_chat.helpers import client_for, stream
from tests.conftest import OPENAI_SECRET, make_key

ADD = "/api-manager/keys/add/"
UNSAFE = str(netguard.UNSAFE_MESSAGE)


def add_form(**overrides):
    data = {
        "provider": "openai",
        "label": "Mine",
        "api_key": OPENAI_SECRET,
        "base_url": "",
        "default_model": "gpt-4o-mini",
    }
    data.update(overrides)
    return data


REFUSED = [
    "http://127.0.0.1:8000/v1",
    "http://localhost:11434/v1",  # a name that resolves to loopback
    "http://[::1]:8080/v1",
    "http://[::ffff:127.0.0.1]/v1",  # IPv4-mapped IPv6
    "http://0.0.0.0:8000/v1",
    "http://10.0.0.5/v1",
    "http://172.16.3.4/v1",
    "http://192.168.1.1/v1",
    "http://100.100.100.200/latest/meta-data",  # shared address space (a cloud's metadata)
    "http://169.254.169.254/latest/meta-data/",  # link-local: cloud metadata
    "http://[fd00:ec2::254]/latest/meta-data/",  # unique-local: cloud metadata over IPv6
    "http://[fe80::1]/v1",
    "http://224.0.0.1/v1",
    "http://[64:ff9b::7f00:1]/v1",  # NAT64 of 127.0.0.1
    "https://no-such-host.invalid/v1",  # does not resolve: the same answer
]


@pytest.mark.parametrize("url", REFUSED)
def test_it_refuses_base_urls_on_the_servers_own_network(alice_client, url):
    response = alice_client.post(ADD, add_form(base_url=url))
    assert response.status_code == 400
    errors = response.context["form"].errors["base_url"]
    # One message for every case: it says nothing about what the target is or whether it answered.
    assert errors == [UNSAFE]
    assert ProviderKey.objects.count() == 0


@pytest.mark.parametrize("url", ["http://127.1/v1", "http://2130706433/v1", "http://0x7f.1/v1"])
def test_odd_spellings_of_loopback_are_refused(alice_client, url):
    # The form's URL check already refuses them; the resolver's reading is refused as well.
    assert alice_client.post(ADD, add_form(base_url=url)).status_code == 400
    with pytest.raises(netguard.UnsafeBaseURL):
        netguard.check_url(url)


@pytest.mark.parametrize(
    "url", ["https://user:pass@1.1.1.1/v1", "https://token@1.1.1.1/v1", "http://a:b@127.0.0.1/v1"]
)
def test_it_refuses_credentials_in_a_base_url_and_does_not_show_them(alice_client, url):
    response = alice_client.post(ADD, add_form(base_url=url))
    assert response.status_code == 400
    assert response.context["form"].errors["base_url"] == [str(netguard.CREDENTIALS_MESSAGE)]
    html = response.content.decode()
    assert "pass@" not in html and "token@" not in html and "a:b@" not in html
    assert ProviderKey.objects.count() == 0


def test_a_key_saved_with_credentials_earlier_never_shows_them(alice_client, alice):
    make_key(alice, base_url="https://user:hunter2@1.1.1.1/v1")
    html = alice_client.get("/api-manager/settings/").content.decode()
    assert "hunter2" not in html
    assert "https://1.1.1.1/v1" in html


def test_an_allowed_local_server_may_be_used(alice_client, fake, settings):
    assert f"127.0.0.1:{fake.port}" in settings.PROVIDER_PRIVATE_HOSTS
    response = alice_client.post(ADD, add_form(base_url=fake.openai_url))
    assert response.status_code == 302
    # Only that port: the next one on the same host is refused.
    other = alice_client.post(ADD, add_form(base_url=f"http://127.0.0.1:{fake.port + 1}/v1"))
    assert other.status_code == 400


def test_the_wizard_cannot_probe_the_local_network(alice_client, fake, settings):
    settings.PROVIDER_PRIVATE_HOSTS = []
    response = alice_client.post(
        "/api-manager/keys/check/", add_form(base_url=fake.openai_url, label="")
    )
    assert response.status_code == 400
    assert response.json()["error"] == UNSAFE
    assert fake.requests == []


def test_an_existing_key_with_a_refused_url_fails_with_the_same_message(
    alice_client, alice, fake, settings
):
    key = make_key(alice, fake)
    settings.PROVIDER_PRIVATE_HOSTS = []  # the administrator withdrew the permission
    body = alice_client.post(f"/api-manager/keys/{key.pk}/test/").json()
    assert body == {"ok": False, "error": UNSAFE, "code": "provider"}
    assert fake.requests == []


@pytest.mark.django_db(transaction=True)
async def test_a_chat_turn_with_a_refused_url_ends_with_that_message(alice, fake, settings):
    from asgiref.sync import sync_to_async

    key = await sync_to_async(make_key)(alice, fake)
    settings.PROVIDER_PRIVATE_HOSTS = []
    client = await client_for(alice)
    response, events = await stream(client, message="hello", key=key.pk)
    assert events[-1] == ("error", {"message": UNSAFE, "code": "provider"})
    assert fake.requests == []
    reply = await Message.objects.filter(role="assistant").alatest("id")
    assert reply.status == "error"


def test_the_system_check_lists_keys_whose_url_is_now_refused(alice, fake, settings, capsys):
    make_key(alice, fake, label="Local")
    make_key(alice, base_url="https://1.1.1.1/v1", label="Public")
    settings.PROVIDER_PRIVATE_HOSTS = []
    from django.core.checks import run_checks

    warnings = [w for w in run_checks(databases=["default"]) if w.id == "api_manager.W001"]
    assert len(warnings) == 1
    assert "“Local” of alice" in warnings[0].msg
    # Without a database (a plain `check`) the keys are not read.
    assert not [w for w in run_checks() if w.id == "api_manager.W001"]
    call_command("check", "--database", "default")  # a warning, not an error
    assert "api_manager.W001" in capsys.readouterr().err


async def test_dns_rebinding_between_the_check_and_the_connect_is_refused(fake, monkeypatch):
    """The name resolves to a public address when checked before the call, then to loopback
    when the transport connects: the transport checks again and refuses; nothing arrives."""
    answers = iter(["93.184.216.34", "127.0.0.1", "127.0.0.1", "127.0.0.1"])

    async def rebinding_dns(host: str, port: int):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers), port))]

    monkeypatch.setattr(netguard, "resolve", rebinding_dns)
    provider = get_provider(
        ProviderConfig(
            "openai", OPENAI_SECRET, f"http://rebind.test:{fake.port}/v1", timeout=5, max_retries=0
        )
    )
    with pytest.raises(ProviderError):
        await provider.list_models()
    assert fake.requests == []


async def test_the_transport_connects_to_the_checked_address(fake, monkeypatch):
    """A name the administrator did not allow, resolving to a public address, is connected to
    at that address: the connection cannot go anywhere the check did not see."""
    seen = []

    async def dns(host: str, port: int):
        seen.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(netguard, "resolve", dns)
    transport = netguard.GuardedTransport()
    import httpx2

    async with httpx2.AsyncClient(transport=transport) as client:
        with pytest.raises(netguard.UnsafeBaseURL):
            await client.get(f"http://example.test:{fake.port}/v1/models")
    assert seen == ["example.test"]
    assert fake.requests == []


def test_migrate_runs_on_a_fresh_database(tmp_path):
    """The key check reads the keys' table: on a fresh database `migrate` (which runs the
    checks first) must not fail because that table does not exist yet."""
    import os
    import subprocess
    import sys

    env = dict(
        os.environ, DJANGO_DEBUG="on", DATABASE_URL=f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
    )
    env.pop("DJANGO_SETTINGS_MODULE", None)
    result = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
