"""Issue #8's findings and new attacks, tried from outside against the production stack:
gunicorn with two uvicorn workers (deploy/gunicorn.conf.py) behind the shipped nginx site over
TLS (deploy/nginx.conf), DEBUG off, the default shared cache (the database's).

Each test drives one attacker's session through nginx and then reads the processes' captured
logs: no test API key may appear in them, in clear or partly."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path

import httpx
import pytest
from django.contrib.auth.models import User
from django.db import connection

from ai_chat.models import ActionLog
from api_manager.models import ProviderKey
from core.models import SecurityEvent, SecurityEventKind
from tests import stack
from tests.conftest import PASSWORD, user_with_permissions

pytestmark = [
    pytest.mark.skipif(
        shutil.which("nginx") is None, reason="nginx is not installed (apt-get install nginx-light)"
    ),
    pytest.mark.django_db(transaction=True),
]

# Keys without the usual `sk-` prefixes, so the log filter's patterns cannot hide a leak: if
# one shows up in a log, the panel wrote it there.
SECRET_A = "attackkey-0123456789abcdefghijklmnopqrstuv"
SECRET_B = "attackkey-ZYXWVUTSRQPONMLKJIHGFEDCBA987654"


@pytest.fixture
def workspace():
    root = Path(tempfile.mkdtemp(prefix="bsepar-workspace-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def site(transactional_db, static_root, workspace, fake, settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    with stack.served(
        static_root,
        workers=2,
        FILE_ACTIONS_ROOT=str(workspace),
        # Every probe of the wizard must reach the URL check, not stop at the rate limit.
        PROVIDER_CHECKS_PER_MINUTE="1000",
        # The most a worried administrator would turn on: every library's debug output.
        LOG_LEVEL="DEBUG",
    ) as site:
        yield site.panel, site.proxy


class Browser:
    """One visitor through nginx over TLS, with its own cookie jar (the cookies are Secure)."""

    def __init__(self, base: str, **headers: str) -> None:
        self.http = httpx.Client(
            base_url=base,
            verify=False,
            timeout=30,
            headers={"Host": stack.HOST, "Referer": f"https://{stack.HOST}/", **headers},
        )
        self.cookies: dict[str, str] = {}

    def _headers(self, extra: dict[str, str] | None) -> dict[str, str]:
        cookie = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        return {**({"Cookie": cookie} if cookie else {}), **(extra or {})}

    def request(self, method: str, path: str, headers: dict | None = None, **kw) -> httpx.Response:
        response = self.http.request(method, path, headers=self._headers(headers), **kw)
        for name, value in response.cookies.items():
            self.cookies[name] = value
        return response

    def get(self, path: str, **kw) -> httpx.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw) -> httpx.Response:
        return self.request("POST", path, **kw)

    def token(self, path: str = "/login/") -> str:
        page = self.get(path)
        match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        assert match, (path, page.status_code)
        return match.group(1)

    def sign_in(self, username: str, password: str = PASSWORD, **headers: str) -> httpx.Response:
        token = self.token()
        return self.post(
            "/login/",
            data={"username": username, "password": password, "csrfmiddlewaretoken": token},
            headers=headers,
        )

    def json_post(self, path: str, body: str | bytes) -> httpx.Response:
        return self.post(
            path,
            content=body,
            headers={"Content-Type": "application/json", "X-CSRFToken": self.cookies["csrftoken"]},
        )


def captured_logs(panel: stack.Panel, proxy: stack.Nginx) -> str:
    return panel.output() + (proxy.dir / "error.log").read_text(errors="replace")


def assert_no_secret_in(logs: str, *secrets: str) -> None:
    for secret in secrets:
        # The whole key, and any 12 characters of it (a key cut or wrapped in a message).
        for start in range(0, len(secret) - 12, 4):
            assert secret[start : start + 12] not in logs, f"part of a key in the logs: {start}"


def test_session_fixation_and_csrf_on_the_password_page(site, fake):
    """An attacker plants a session id before the victim signs in: the victim gets another one,
    and the planted one is not signed in. The password page refuses a cross-site POST."""
    panel, proxy = site
    User.objects.create_user("victim", password=PASSWORD)
    victim = Browser(proxy.url)
    victim.token()  # a csrftoken cookie
    planted = "a" * 32
    victim.cookies["sessionid"] = planted
    assert victim.sign_in("victim").status_code == 302
    assert victim.cookies["sessionid"] != planted
    attacker = Browser(proxy.url)
    attacker.cookies["sessionid"] = planted
    assert attacker.get("/").status_code == 302  # to the login page

    # A cross-site form: the victim's cookies ride along, no token (or the attacker's own).
    forged = {
        "old_password": PASSWORD,
        "new_password1": "attacker chose this 1",
        "new_password2": "attacker chose this 1",
    }
    for headers in ({"Origin": "https://evil.example"}, {"Referer": "https://evil.example/"}, {}):
        response = victim.post("/password/", data=forged, headers=headers)
        assert response.status_code == 403
    response = victim.post(
        "/password/",
        data={**forged, "csrfmiddlewaretoken": attacker.token()},
        headers={"Origin": "https://evil.example"},
    )
    assert response.status_code == 403
    assert User.objects.get(username="victim").check_password(PASSWORD)

    # Signing out ends the session on both workers (many fresh connections).
    home = victim.token("/")
    old = dict(victim.cookies)
    assert victim.post("/logout/", data={"csrfmiddlewaretoken": home}).status_code == 302
    replay = Browser(proxy.url)
    replay.cookies = old
    assert {replay.get("/").status_code for _ in range(24)} == {302}

    assert_no_secret_in(captured_logs(panel, proxy), PASSWORD)


# Base URLs an attacker tries from the wizard's live test and the add form. Each must be
# refused with the one message, before any connection.
SSRF_URLS = [
    "http://127.0.0.1:{port}/v1",  # loopback, a port nobody allowed
    "http://localhost:{port}/v1",
    "http://[::1]:{port}/v1",
    "http://0x7f000001:{port}/v1",
    "http://2130706433:{port}/v1",
    "http://0177.0.0.1:{port}/v1",
    "http://127.1:{port}/v1",
    "http://[::ffff:127.0.0.1]:{port}/v1",
    "http://[::ffff:7f00:1]:{port}/v1",
    "http://169.254.169.254/latest/meta-data/",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://ｌｏｃａｌｈｏｓｔ:{port}/v1",  # fullwidth: IDNA maps it to localhost
    "http://xn--localhost-:{port}/v1",
    "http://%6c%6f%63%61%6c%68%6f%73%74:{port}/v1",  # percent-encoded localhost
    "http://127.0.0.1%2f@evil.example/v1",
    "http://evil.example\\@127.0.0.1:{port}/v1",
    "http://127.0.0.1:{port}%0d%0aX-Injected:%201/v1",
    "http://127.0.0.1:{port}\r\nX-Injected: 1/v1",
    "http://user:pass@127.0.0.1:{port}/v1",
]


def test_ssrf_from_the_wizard_and_the_add_form(site, fake):
    panel, proxy = site
    user_with_permissions("mallory")
    mallory = Browser(proxy.url)
    assert mallory.sign_in("mallory").status_code == 302
    token = mallory.token("/api-manager/settings/")
    allowed_port = fake.port + 1 if fake.port < 65535 else fake.port - 1
    for template in SSRF_URLS:
        # Only 127.0.0.1:<the fake's port> is allowed: the first case takes the port beside it.
        port = allowed_port if template == SSRF_URLS[0] else fake.port
        url = template.format(port=port)
        form = {
            "provider": "openai",
            "label": "probe",
            "api_key": SECRET_A,
            "base_url": url,
            "csrfmiddlewaretoken": token,
        }
        check = mallory.post("/api-manager/keys/check/", data=form)
        assert check.status_code == 400, (url, check.status_code, check.text)
        assert check.json()["ok"] is False
        add = mallory.post("/api-manager/keys/add/", data=form)
        assert add.status_code == 400, (url, add.status_code)
    assert ProviderKey.objects.count() == 0
    assert fake.requests == []
    assert_no_secret_in(captured_logs(panel, proxy), SECRET_A)


def test_bad_input_and_deep_json_on_every_endpoint(site, fake, workspace):
    """Issue #8's bad inputs through nginx: each is a 4xx with a message, never a 500, and
    each action attempt is audited; a key used for a chat never reaches the logs."""
    panel, proxy = site
    user_with_permissions("olga", "run_query", "write_files")
    olga = Browser(proxy.url)
    assert olga.sign_in("olga").status_code == 302
    olga.token("/")
    deep = b"[" * 100_000 + b"]" * 100_000
    deep_object = b'{"code": ' + deep + b"}"
    codes = [
        'Message.objects.filter(id="abc")',
        'Message.objects.filter(created_at__gt="notadate")',
        "Message.objects.filter(id__in=5)",
        "Message.objects.filter(id__range=[1])",
        'Conversation.objects.values("owner__id__username")',
        "Message.objects.filter(id=1e999)",
        "Message.objects.filter(" + "~" * 3000 + "Q(id=1))",
        "Message.objects.order_by(" + "-" * 3000 + '"id")',
        'Message.objects.filter(content="\\ud800")',
    ]
    before = ActionLog.objects.count()
    for code in codes:
        response = olga.json_post("/api/actions/query/", json.dumps({"code": code}))
        assert response.status_code == 400, (code[:60], response.status_code)
        assert response.json()["error"]
    for path in (
        "/api/actions/query/",
        "/api/actions/append/",
        "/api/actions/append/confirm/",
        "/ai-chat/stream/",
    ):
        for body in (deep, deep_object, b"\xff\xfe", b'{"code": "\\ud800"}'):
            response = olga.json_post(path, body)
            assert 400 <= response.status_code < 500, (
                path,
                body[:12],
                response.status_code,
                (proxy.dir / "error.log").read_text()[-1500:],
            )
    assert ActionLog.objects.count() > before

    # Issue #8.7: a 1.5 MB `spec` of 60,000 OR-ed conditions held a worker 13-17 s.
    import time

    spec = {"model": "Message", "or": [{"id": n} for n in range(60_000)]}
    started = time.monotonic()
    response = olga.json_post("/api/actions/query/", json.dumps({"spec": spec}))
    assert response.status_code == 400
    assert time.monotonic() - started < 5

    # A FIFO and a hard link under the root: refused, nothing hangs, nothing written outside.
    import os

    os.mkfifo(workspace / "pipe.md")
    outside = Path(tempfile.mkdtemp(prefix="bsepar-outside-")) / "secret.md"
    outside.write_text("outside\n")
    os.link(outside, workspace / "linked.md")
    for name in ("pipe.md", "linked.md"):
        response = olga.json_post(
            "/api/actions/append/", json.dumps({"path": name, "content": "x\n"})
        )
        assert response.status_code == 400, (name, response.status_code)
    assert outside.read_text() == "outside\n"
    shutil.rmtree(outside.parent, ignore_errors=True)

    # A chat turn with a key (through the fake, on its allowed address).
    key = ProviderKey(owner=User.objects.get(username="olga"), provider="openai", label="k")
    key.base_url = fake.openai_url
    key.default_model = "gpt-4o-mini"
    key.set_secret(SECRET_B)
    key.save()
    stream = olga.post(
        "/ai-chat/stream/",
        data={"message": "hello there", "key": str(key.pk)},
        headers={"X-CSRFToken": olga.cookies["csrftoken"]},
    )
    assert stream.status_code == 200 and "event: done" in stream.text
    failed = olga.post(
        "/ai-chat/stream/",
        data={"message": "fail please [[401]]", "key": str(key.pk)},
        headers={"X-CSRFToken": olga.cookies["csrftoken"]},
    )
    assert "event: error" in failed.text
    test = olga.post(
        f"/api-manager/keys/{key.pk}/test/",
        headers={"X-CSRFToken": olga.cookies["csrftoken"]},
    )
    assert test.status_code in (200, 429)
    logs = captured_logs(panel, proxy)
    assert " 500 " not in logs and "Internal Server Error" not in logs
    assert_no_secret_in(logs, SECRET_B, PASSWORD)


def test_sign_ins_are_logged_with_the_address_nginx_saw(site):
    panel, proxy = site
    User.objects.create_user("victim", password=PASSWORD)
    attacker = Browser(proxy.url, **{"X-Forwarded-For": "203.0.113.9", "X-Real-IP": "203.0.113.9"})
    attacker.sign_in("victim", "wrong password")
    honest = Browser(proxy.url)
    assert honest.sign_in("victim").status_code == 302
    events = list(SecurityEvent.objects.order_by("id").values_list("kind", "address"))
    assert (SecurityEventKind.LOGIN_FAILED, "127.0.0.1") in events
    assert (SecurityEventKind.LOGIN, "127.0.0.1") in events
    assert all(ip != "203.0.113.9" for _kind, ip in events)


def worker_rss_mb(panel: stack.Panel) -> float:
    """The resident memory of the gunicorn master's workers (MB)."""
    total = 0
    children = Path(f"/proc/{panel.proc.pid}/task/{panel.proc.pid}/children").read_text().split()
    for pid in children:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


@pytest.fixture
def lone_worker(transactional_db, static_root, fake, settings):
    """One worker (so its memory can be read), the check limit raised: memory, not the limit,
    is what this measures."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    with stack.served(static_root, proxy=False, PROVIDER_CHECKS_PER_MINUTE="100000") as site:
        yield site.panel


def test_live_checks_with_new_keys_do_not_grow_memory(lone_worker, fake):
    """Issue #8.4: 300 live checks with new keys grew the workers by ~250 MB. Now each tried
    key's client is closed after its call and saved keys share a bounded cache."""
    panel = lone_worker
    owner = User.objects.create_user("mallory", password=PASSWORD)
    saved = []
    for n in range(100):
        key = ProviderKey(owner=owner, provider="openai", label=f"k{n}", base_url=fake.openai_url)
        key.set_secret(f"attackkey-saved-{n:04d}-0123456789abcdef")
        key.save()
        saved.append(key.pk)
    mallory = Browser(panel.url, **{"X-Forwarded-Proto": "https"})
    assert mallory.sign_in("mallory").status_code == 302
    token = mallory.token("/api-manager/settings/")

    def check(n: int) -> None:
        form = {
            "provider": "openai" if n % 2 else "anthropic",
            "api_key": f"attackkey-new-{n:05d}-0123456789abcdef",
            "base_url": fake.openai_url if n % 2 else fake.anthropic_url,
            "csrfmiddlewaretoken": token,
        }
        response = mallory.post("/api-manager/keys/check/", data=form)
        assert response.status_code == 200 and response.json()["ok"], response.text[:300]

    def test_saved(pk: int) -> None:
        response = mallory.post(f"/api-manager/keys/{pk}/test/", headers={"X-CSRFToken": token})
        assert response.status_code == 200 and response.json()["ok"], response.text[:300]

    for n in range(40):  # warm up: imports, pools, the allocator's arenas
        check(n)
    for pk in saved[:40]:
        test_saved(pk)
    before = worker_rss_mb(panel)
    for n in range(40, 340):
        check(n)
    middle = worker_rss_mb(panel)
    print(f"worker RSS {before:.1f} MB -> {middle:.1f} MB after 300 new-key checks")
    for pk in saved * 3:  # 300 tests over 100 saved keys: the LRU (32) evicts and closes
        test_saved(pk)
    after = worker_rss_mb(panel)
    print(f"worker RSS {before:.1f} MB -> {after:.1f} MB after 300 new-key checks + 300 tests")
    # ~250 MB before the fix; allow the allocator some slack, not one client per key.
    assert after - before < 40, (before, after)


def sse_events(text: str) -> list[tuple[str, dict]]:
    events = []
    for block in text.split("\n\n"):
        name = re.search(r"^event: (\w+)", block, re.M)
        data = re.search(r"^data: (.*)$", block, re.M)
        if name and data:
            events.append((name.group(1), json.loads(data.group(1))))
    return events


def test_a_tool_call_id_with_a_slash_and_sessions_after_a_password_change(site, fake):
    """Issue #8.5 through nginx: a model's tool call id `../x/y` ends the stream with `done`
    and the conversation page renders. Issue #8.2: a password change on one worker ends the
    user's other sessions on both workers and keeps this one."""
    panel, proxy = site
    user_with_permissions("olga", "run_query", "write_files")
    olga, other = Browser(proxy.url), Browser(proxy.url)
    assert olga.sign_in("olga").status_code == 302
    assert other.sign_in("olga").status_code == 302
    csrf = olga.token("/")
    key = ProviderKey(owner=User.objects.get(username="olga"), provider="anthropic", label="k")
    key.base_url = fake.anthropic_url
    key.default_model = "claude-test-sonnet"
    key.set_secret(SECRET_B)
    key.save()
    fake.custom_tool_call = {
        "id": "../x/y?z#" + "a" * 300,
        "name": "run_query/../" + "n" * 100,
        "arguments": '{"code": ' + "[" * 5000 + "]" * 5000 + "}",
    }
    stream = olga.post(
        "/ai-chat/stream/",
        data={"message": "[[tool:custom]] go", "key": str(key.pk)},
        headers={"X-CSRFToken": csrf},
    )
    events = sse_events(stream.text)
    assert events[-1][0] == "done", events[-1]
    page = olga.get(f"/ai-chat/c/{events[0][1]['conversation']}/")
    assert page.status_code == 200

    token = olga.token("/password/")
    changed = olga.post(
        "/password/",
        data={
            "old_password": PASSWORD,
            "new_password1": "a new and long passphrase 7",
            "new_password2": "a new and long passphrase 7",
            "csrfmiddlewaretoken": token,
        },
    )
    assert changed.status_code == 302
    assert {olga.get("/").status_code for _ in range(12)} == {200}
    assert {other.get("/").status_code for _ in range(24)} == {302}
    assert_no_secret_in(captured_logs(panel, proxy), SECRET_B, PASSWORD, "passphrase 7")


def test_a_root_overlapping_the_code_is_refused_at_start_and_on_use(
    transactional_db, static_root, settings
):
    """Issue #8.10: FILE_ACTIONS_ROOT set to the panel's own directory. The system check that
    the unit runs before starting fails; a panel started anyway refuses the append."""
    import subprocess
    import sys

    overlapping = {"FILE_ACTIONS_ROOT": str(stack.ROOT)}
    env = stack.panel_env(
        stack.database_url(connection.settings_dict), None, static_root, **overlapping
    )
    check = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "ERROR"],
        cwd=stack.ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode != 0 and "FILE_ACTIONS_ROOT" in check.stderr + check.stdout
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    user_with_permissions("olga", "run_query", "write_files")
    with stack.served(static_root, proxy=False, **overlapping) as site:
        olga = Browser(site.panel.url, **{"X-Forwarded-Proto": "https"})
        assert olga.sign_in("olga").status_code == 302
        olga.token("/")
        readme = (stack.ROOT / "README.md").read_bytes()
        for path in ("README.md", "bsepar_panel/settings_local.md", "notes.md"):
            response = olga.json_post(
                "/api/actions/append/", json.dumps({"path": path, "content": "x\n"})
            )
            assert response.status_code == 400, (path, response.status_code)
        assert (stack.ROOT / "README.md").read_bytes() == readme
        assert not (stack.ROOT / "notes.md").exists()
