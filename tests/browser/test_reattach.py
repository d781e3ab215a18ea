"""The chat page and a reply that outlives its connection, in headless Chromium through the real
stack (tests/stack.py: gunicorn with the uvicorn worker behind the shipped nginx site over TLS).

Chromium reaches nginx by name, as a browser reaches a deployment: `--host-resolver-rules` maps
each test host name to one of nginx's TLS ports, so pages are on https://<name>/ (no port in
the origin, as on 443) and their POSTs pass the CSRF origin check unchanged.

What is compared is the text the page assembled while the reply grew (recorded at every change
of the reply's element) with the reply's row: nothing repeated, nothing lost."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from ai_chat.models import Message, Status
from tests import stack
from tests.browser.conftest import PageWatch, _launch, screenshot
from tests.conftest import PASSWORD, make_key

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("served_alice"),
]

# The names the pages use, one per app server (each through nginx's block for that server).
HOSTS = ["a.panel.example.com", "b.panel.example.com"]
ALLOWED = ",".join([stack.HOST, *HOSTS, "127.0.0.1", "localhost"])

# Records, in the page, the reply's text at every change while it is live (`__texts`) and the
# reply's state once it ends (`__end`): what the test compares with the database.
RECORD = """() => {
  window.__texts = [];
  window.__end = null;
  const list = document.getElementById('messages');
  new MutationObserver(() => {
    const reply = list.querySelector('article[data-role=assistant]:last-of-type');
    if (!reply) return;
    const body = reply.querySelector('.body');
    if (reply.classList.contains('streaming') || reply.classList.contains('live')) {
      const text = body ? body.textContent : '';
      if (text && text !== window.__texts[window.__texts.length - 1]) window.__texts.push(text);
    }
    if (!window.__end && /\\b(complete|stopped|error)\\b/.test(reply.className)) {
      window.__end = { className: reply.className, text: body ? body.textContent : '',
                       meta: (reply.querySelector('.meta') || {}).textContent || '' };
    }
  }).observe(list, { subtree: true, childList: true, characterData: true, attributes: true,
                     attributeFilter: ['class'] });
}"""


def words(text: str) -> list[str]:
    """The text's words: the page's Markdown rendering folds white space, not words."""
    return text.split()


@contextlib.contextmanager
def chromium_at(ports: dict[str, int]) -> Iterator[object]:
    """Headless Chromium resolving each host name to 127.0.0.1:<port> (an nginx TLS port).
    Playwright's sync API keeps an event loop on this thread: the ORM is told that is fine."""
    from playwright.sync_api import sync_playwright

    rules = ", ".join(f"MAP {host} 127.0.0.1:{port}" for host, port in ports.items())
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        yield from _launch(sync_playwright, f"--host-resolver-rules={rules}")
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


def new_page(browser, cookies: list[dict] | None = None, host: str = ""):
    context = browser.new_context(
        ignore_https_errors=True, viewport={"width": 1280, "height": 860}, locale="en-US"
    )
    if cookies:
        context.add_cookies([{**c, "domain": host} for c in cookies])
    page = context.new_page()
    page.set_default_timeout(30000)
    page.watch = PageWatch(page)
    return page


def sign_in(page, host: str) -> None:
    page.goto(f"https://{host}/login/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"https://{host}/")


def send(page, host: str, message: str) -> int:
    """Send `message` from a new conversation's composer; the reply's id once the page has it."""
    page.goto(f"https://{host}/ai-chat/")
    page.evaluate(RECORD)
    page.fill("#chat-input", message)
    page.keyboard.press("Enter")
    reply = page.wait_for_selector("article[data-role=assistant][data-message-id]")
    return int(reply.get_attribute("data-message-id"))


def shown(page, at_least: int) -> None:
    """Wait until the page shows at least `at_least` characters of the live reply."""
    page.wait_for_function("(n) => (window.__texts || []).some((t) => t.length >= n)", arg=at_least)


def ended(page) -> dict:
    """The reply's end as the page shows it, once it has ended and two frames have passed (a
    live rendering is painted once per animation frame)."""
    page.wait_for_function("() => window.__end !== null", timeout=90000)
    return page.evaluate(
        """() => new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(() => {
          const reply = document.querySelector('article[data-role=assistant]:last-of-type');
          resolve({ texts: window.__texts, end: window.__end,
                    text: reply.querySelector('.body').textContent });
        })))"""
    )


def assert_shown_once(result: dict, shown_words: list[str]) -> None:
    """Each text the page showed while the reply grew was a beginning of the saved reply as
    shown (nothing repeated, nothing out of place), and what it shows at the end is the whole
    saved reply (nothing lost)."""
    assert result["texts"], "the page showed no live text"
    for text in result["texts"]:
        assert shown_words[: len(words(text))] == words(text), (text[-80:], shown_words[-8:])
    assert words(result["text"]) == shown_words, (result["text"][-80:], shown_words[-8:])


def assert_ended_as_sent(page) -> None:
    """The followed reply's line under it ends as that of a reply the page sent: its usage,
    then one Regenerate."""
    meta = page.inner_text("article[data-role=assistant]:last-of-type .meta")
    assert re.match(r"\d+ → \d+ tokens", meta), meta
    assert meta.count("Regenerate") == 1 and "· ·" not in meta, meta


def stream_requests(page, reply_id: int) -> list:
    """The page's requests to GET /ai-chat/stream/<reply_id>/ (re-attaching), as they go."""
    seen: list = []
    page.on(
        "request",
        lambda r: seen.append(r) if f"/ai-chat/stream/{reply_id}/" in r.url else None,
    )
    return seen


def test_a_page_reloaded_mid_reply_shows_it_live_and_complete(static_root, alice, fake):
    fake.word_delay = 0.02  # eight seconds of reply
    make_key(alice, fake)
    with stack.served(static_root, ALLOWED_HOSTS=ALLOWED) as site:
        port = urlsplit(site.url).port
        with chromium_at({HOSTS[0]: port}) as browser:
            page = new_page(browser)
            sign_in(page, HOSTS[0])
            reply_id = send(page, HOSTS[0], "[[long]]")
            shown(page, 60)
            page.reload()
            page.evaluate(RECORD)
            page.wait_for_selector(f"article[data-message-id='{reply_id}'].live")
            # Live: it goes on growing in the reloaded page.
            page.wait_for_function(
                "() => window.__texts.length >= 3 && "
                "window.__texts[window.__texts.length - 1].length > window.__texts[0].length"
            )
            result = ended(page)
            screenshot(page, "reattach-reloaded-complete")
            reply = Message.objects.get(pk=reply_id)
            assert reply.status == Status.COMPLETE
            assert "complete" in result["end"]["className"]
            assert_shown_once(result, words(reply.content))
            assert_ended_as_sent(page)
            # The thread followed the reply down as it grew: its end is in sight.
            assert page.evaluate(
                "() => { const list = document.getElementById('messages');"
                " return list.scrollHeight > list.clientHeight"
                " && list.scrollHeight - list.scrollTop - list.clientHeight < 2; }"
            )
            assert page.watch.errors == []


def children(pid: int) -> set[int]:
    return {int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def test_a_dropped_connection_mid_reply_the_page_follows_it_again_and_shows_it_once(
    static_root, alice, fake
):
    """The page's own stream is cut (nginx's worker dies; its master starts another): the reply
    goes on on the server, and the page follows it again from the last id it received. The
    reply is Markdown (bold words): the page goes on from the text it received, not from what
    its rendering shows, and renders it as it did before the cut."""
    fake.word_delay = 0.02  # six seconds of reply
    fake.scripted_reply = " ".join(f"**w{i}**" for i in range(300))
    make_key(alice, fake)
    with stack.served(static_root, ALLOWED_HOSTS=ALLOWED) as site:
        with chromium_at({HOSTS[0]: urlsplit(site.url).port}) as browser:
            page = new_page(browser)
            sign_in(page, HOSTS[0])
            reply_id = send(page, HOSTS[0], "[[scripted]]")
            followed = stream_requests(page, reply_id)
            shown(page, 60)
            for worker in children(site.proxy.proc.pid):
                os.kill(worker, signal.SIGKILL)
            result = ended(page)
            screenshot(page, "reattach-dropped-complete")
            reply = Message.objects.get(pk=reply_id)
            assert reply.status == Status.COMPLETE
            assert "complete" in result["end"]["className"]
            assert_shown_once(result, [word.strip("*") for word in words(reply.content)])
            assert_ended_as_sent(page)
            assert followed, "the page did not follow the reply again"
            resumed = followed[0].all_headers().get("last-event-id") or followed[0].url
            assert int(resumed.rsplit("=", 1)[-1]) > 0, resumed
            assert page.is_hidden("#chat-stop")


def on_both_servers(browser) -> tuple:
    """Page A sends a long reply through server A; page B, the same user's second tab, opens
    its conversation through server B and shows the reply live. Returns page A, page B, the
    reply's id, and page B's requests to follow the reply and the statuses of their answers,
    as they go."""
    page_a = new_page(browser)
    sign_in(page_a, HOSTS[0])
    reply_id = send(page_a, HOSTS[0], "[[long]]")
    shown(page_a, 20)
    page_b = new_page(browser, page_a.context.cookies(), HOSTS[1])
    follows = stream_requests(page_b, reply_id)
    statuses: list[int] = []
    page_b.on(
        "response",
        lambda r: statuses.append(r.status) if f"/stream/{reply_id}/" in r.url else None,
    )
    conversation = Message.objects.get(pk=reply_id).conversation_id
    page_b.goto(f"https://{HOSTS[1]}/ai-chat/c/{conversation}/")
    page_b.evaluate(RECORD)
    shown(page_b, 60)
    return page_a, page_b, reply_id, follows, statuses


def ports_of(site: stack.Served) -> dict[str, int]:
    """Each test host name → nginx's TLS port for that app server alone."""
    return {host: urlsplit(site.server_url(i)).port for i, host in enumerate(HOSTS)}


@pytest.mark.parametrize("ending", ["complete", "interrupted"])
def test_a_graceful_restart_mid_reply_the_open_pages_reattach_and_show_the_reply(
    ending, static_root, alice, fake
):
    """An upgrade reloads every server (HUP: new workers; the old ones finish gracefully). The
    reply runs on server A; page A sent it (its stream is on A's worker, which keeps it), page B
    shows it through server B (a second tab whose stream a load balancer put on another
    server: B's worker reads A's checkpoints). At the HUP, B's old worker lets page B go; page
    B re-attaches by itself with its last event id, to B's new worker. The reply either
    finishes within the grace (CHAT_SHUTDOWN_SECONDS) and both pages show it complete, or does
    not and is saved as interrupted with what arrived, which both pages show with the reason.
    Either way each page assembled exactly the saved text."""
    if ending == "complete":
        fake.word_delay = 0.04  # sixteen seconds of reply, well within the grace
        grace = {"CHAT_SHUTDOWN_SECONDS": "40", "GUNICORN_GRACEFUL_TIMEOUT": "60"}
    else:
        fake.word_delay = 0.1  # forty seconds of reply, longer than the grace
        grace = {"CHAT_SHUTDOWN_SECONDS": "1", "GUNICORN_GRACEFUL_TIMEOUT": "20"}
    make_key(alice, fake)
    with stack.served(static_root, servers=2, ALLOWED_HOSTS=ALLOWED, **grace) as site:
        with chromium_at(ports_of(site)) as browser:
            page_a, page_b, reply_id, reattached, _ = on_both_servers(browser)
            # Still generating: the restart comes mid-reply (on a slow machine, a longer reply).
            assert Message.objects.get(pk=reply_id).status == Status.STREAMING
            for panel in site.panels:
                panel.proc.send_signal(signal.SIGHUP)
            signalled = time.monotonic()
            result_a, result_b = ended(page_a), ended(page_b)
            took = time.monotonic() - signalled
            screenshot(page_a, f"reattach-restart-{ending}-a")
            screenshot(page_b, f"reattach-restart-{ending}-b")
            reply = Message.objects.get(pk=reply_id)
            if ending == "complete":
                assert reply.status == Status.COMPLETE
                assert reply.content == " ".join(f"word{i}" for i in range(400))
                for page, result in ((page_a, result_a), (page_b, result_b)):
                    assert "complete" in result["end"]["className"]
                    assert_ended_as_sent(page)
            else:
                assert reply.status == Status.ERROR and "interrupted" in reply.error_message
                assert reply.content.startswith("word0")
                for page, result in ((page_a, result_a), (page_b, result_b)):
                    assert "error" in result["end"]["className"]
                    assert reply.error_message in result["end"]["meta"]
                    meta = page.inner_text("article[data-role=assistant]:last-of-type .meta")
                    assert meta.count("Regenerate") == 1 and "· ·" not in meta, meta
            for result in (result_a, result_b):
                assert_shown_once(result, words(reply.content))
            # Page B re-attached by itself, from the last id it had received.
            assert len(reattached) >= 2, [r.url for r in reattached]
            resumed = reattached[-1].all_headers().get("last-event-id")
            assert resumed and int(resumed) > 0, reattached[-1].all_headers()
            assert page_a.watch.errors == [] and page_b.watch.errors == [], (
                page_a.watch.errors + page_b.watch.errors
            )
            print(f"{ending}: both pages ended {took:.1f} s after the HUP")  # seen with -s
            # The reply has ended: no Stop is offered for it on either page.
            assert page_a.is_hidden("#chat-stop") and page_b.is_hidden("#chat-stop")
            # Page A's next reply (on A's new workers) is the one its Stop stops.
            page_a.fill("#chat-input", "[[long]] again")
            page_a.keyboard.press("Enter")
            following = page_a.wait_for_selector(
                f"article[data-role=assistant][data-message-id]:not([data-message-id='{reply_id}'])"
            )
            page_a.wait_for_function("(n) => window.__texts.length > n", arg=len(result_a["texts"]))
            page_a.click("#chat-stop")
            page_a.wait_for_selector("article[data-role=assistant].stopped")
            again = Message.objects.get(pk=int(following.get_attribute("data-message-id")))
            assert again.status == Status.STOPPED


def test_a_server_down_when_the_page_reconnects_the_page_follows_again_once_it_is_back(
    static_root, alice, fake, monkeypatch
):
    """A page follows, through server B, a reply that runs on server A; B goes down hard (its
    processes killed: a crash, or a restart that cuts streams). The page's reconnection is
    answered by nginx with 502, after which EventSource gives up for good; the page must not:
    once B is back on its port, it follows the reply again from its last id, to the end."""
    from django.db import connection

    fake.word_delay = 0.05  # twenty seconds of reply
    make_key(alice, fake)
    with stack.served(static_root, servers=2, ALLOWED_HOSTS=ALLOWED) as site:
        with chromium_at(ports_of(site)) as browser:
            _, page_b, reply_id, follows, statuses = on_both_servers(browser)
            down = site.panels[1]
            os.killpg(down.proc.pid, signal.SIGKILL)
            down.proc.wait(10)
            page_b.wait_for_timeout(100)
            deadline = time.monotonic() + 30
            while 502 not in statuses and time.monotonic() < deadline:
                page_b.wait_for_timeout(100)
            assert 502 in statuses, statuses
            asked = len(follows)
            # B back on the same port (nginx's upstream for it).
            monkeypatch.setattr(stack, "free_port", lambda: down.port)
            env = stack.panel_env(
                stack.database_url(connection.settings_dict),
                None,
                static_root,
                ALLOWED_HOSTS=ALLOWED,
            )
            back = stack.Panel(env)
            try:
                result = ended(page_b)
                screenshot(page_b, "reattach-server-back-complete")
            finally:
                back.stop()
            reply = Message.objects.get(pk=reply_id)
            assert reply.status == Status.COMPLETE
            assert "complete" in result["end"]["className"]
            assert_shown_once(result, words(reply.content))
            assert_ended_as_sent(page_b)
            assert len(follows) > asked
            resumed = follows[-1].all_headers().get("last-event-id") or follows[-1].url
            assert int(resumed.rsplit("=", 1)[-1]) > 0, resumed
