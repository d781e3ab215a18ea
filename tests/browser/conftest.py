"""A live ASGI server (uvicorn in a thread, as production serves it) and headless Chromium.

Without Chromium these tests skip with a loud reason: install it with `apt-get install -y chromium`
(CI does).
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

CHROMIUM = (
    os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or shutil.which("chromium-browser")
)
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"

pytestmark = pytest.mark.browser


def pytest_collection_modifyitems(config, items):
    if CHROMIUM:
        return
    skip = pytest.mark.skip(
        reason="BROWSER TESTS SKIPPED: Chromium is not installed (apt-get install -y chromium)"
    )
    for item in items:
        if "browser" in str(item.fspath):
            item.add_marker(skip)


class LiveASGIServer:
    def __init__(self) -> None:
        import uvicorn
        from django.core.asgi import get_asgi_application

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        config = uvicorn.Config(
            get_asgi_application(),
            host="127.0.0.1",
            port=self.port,
            lifespan="off",
            log_level="warning",
            loop="asyncio",
            http="h11",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True, name="live-asgi")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LiveASGIServer:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the live ASGI server did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def live_asgi(transactional_db):
    server = LiveASGIServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def chromium():
    """Chromium, per test module: Playwright's sync API keeps an event loop running on this
    thread while it lives, so Django's ORM must be told that synchronous calls here are fine,
    and only for as long as it lives."""
    from playwright.sync_api import sync_playwright

    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        yield from _launch(sync_playwright)
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


def _launch(sync_playwright, *extra_args: str):
    """Chromium with the suite's flags and `extra_args`."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                *extra_args,
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield browser
        browser.close()


class PageWatch:
    """Collects console errors, page errors and CSP violations of one page."""

    def __init__(self, page) -> None:
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))

    def csp_violations(self) -> list[str]:
        return [e for e in self.errors if "Content Security Policy" in e]


@pytest.fixture
def page(chromium):
    context = chromium.new_context(viewport={"width": 1280, "height": 860}, locale="en-US")
    page = context.new_page()
    page.set_default_timeout(15000)
    page.watch = PageWatch(page)
    page.on("dialog", lambda dialog: dialog.accept())
    yield page
    context.close()


def screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
DESKTOP = {"viewport": {"width": 1280, "height": 860}}


@pytest.fixture
def open_page(chromium, live_asgi):
    """open_page(language, phone=False): a new page in its own context, the panel's language
    set through Django's language cookie (what the sidebar's switch sets), errors watched."""
    from django.conf import settings

    contexts = []

    def _open(language: str = "en", phone: bool = False):
        context = chromium.new_context(
            **(PHONE if phone else DESKTOP), locale="fa-IR" if language == "fa" else "en-US"
        )
        context.add_cookies(
            [{"name": settings.LANGUAGE_COOKIE_NAME, "value": language, "url": live_asgi.url}]
        )
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(15000)
        page.watch = PageWatch(page)
        page.on("dialog", lambda dialog: dialog.accept())
        return page

    yield _open
    for context in contexts:
        context.close()
