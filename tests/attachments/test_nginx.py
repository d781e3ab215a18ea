"""Attachments through the real serving stack: gunicorn behind the shipped nginx site, which
serves the bytes from its internal location after the panel checked the owner."""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import stat
import tempfile
from pathlib import Path

import httpx
import pytest

from tests import stack
from tests.attachments import files
from tests.attachments.test_serving import attach
from tests.conftest import PASSWORD
from tests.users.test_stack import client, cookie_header, sign_in

pytestmark = [
    pytest.mark.skipif(
        shutil.which("nginx") is None, reason="nginx is not installed (apt-get install nginx-light)"
    ),
    pytest.mark.django_db(transaction=True),
    # alice's password hashed as the servers' production settings check it.
    pytest.mark.usefixtures("served_alice"),
]


def worker_group() -> int:
    """The group of the test nginx's workers: run as root without a `user` line, nginx runs
    them as its built-in default (nobody, in group nogroup); run unprivileged, as ourselves."""
    return grp.getgrnam("nogroup").gr_gid if os.geteuid() == 0 else os.getegid()


def workers_gids(nginx: stack.Nginx) -> set[int]:
    """The groups the running nginx's worker processes are in (from /proc)."""
    gids: set[int] = set()
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        if re.search(rf"^PPid:\s+{nginx.proc.pid}$", text, re.M):
            gids.add(int(re.search(r"^Gid:\s+(\d+)", text, re.M).group(1)))
            gids |= {int(g) for g in re.search(r"^Groups:(.*)$", text, re.M).group(1).split()}
    return gids


@pytest.fixture
def media(settings):
    """MEDIA_ROOT with the modes deploy/install.sh gives it, for the group of nginx's workers:
    the media folder passable only (0710), attachments/ setgid and readable by the group
    (2750); the panel writes files 0640 (FILE_UPLOAD_PERMISSIONS). Owned by the test process,
    which is not nginx's worker: the workers read as the group or not at all."""
    root = Path(tempfile.mkdtemp(prefix="bsepar-media-"))
    attachments = root / "attachments"
    attachments.mkdir()
    for folder, mode in ((root, 0o710), (attachments, 0o2750)):
        os.chown(folder, -1, worker_group())
        folder.chmod(mode)
    settings.MEDIA_ROOT = root
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def proxy(transactional_db, media, static_root):
    with stack.served(static_root, media_root=str(media), CHAT_ATTACHMENTS_X_ACCEL="on") as site:
        yield site.proxy


def test_nginx_serves_the_owners_file_with_its_own_safety_headers(proxy, alice, bob, media):
    image = attach(alice, ("photo.png", files.png(), "image/png"))[0]
    page = attach(alice, ("page.html", b"<script>alert(1)</script>", "text/html"))[0]
    with client(proxy.url) as http:
        cookies: dict[str, str] = {}
        assert sign_in(http, PASSWORD, cookies).status_code == 302
        response = http.get(f"/ai-chat/attachments/{image.pk}/", headers=cookie_header(cookies))
        assert response.status_code == 200, response.text
        assert response.content == image.file.open("rb").read()
        assert response.headers["content-type"] == "image/png"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["content-security-policy"].startswith("default-src 'none'")
        assert "x-accel-redirect" not in response.headers

        response = http.get(f"/ai-chat/attachments/{page.pk}/", headers=cookie_header(cookies))
        assert response.status_code == 200
        assert response.content == b"<script>alert(1)</script>"
        assert response.headers["content-disposition"] == 'attachment; filename="page.html"'
        assert response.headers["content-type"].startswith("text/plain")
        assert response.headers["x-content-type-options"] == "nosniff"

        # The internal location cannot be asked for directly.
        name = image.file.name.removeprefix("attachments/")
        assert http.get(f"/_attachments/{name}", headers=cookie_header(cookies)).status_code == 404


@pytest.mark.skipif(os.geteuid() != 0, reason="nginx's workers are another user only under root")
def test_nginx_reads_the_file_as_its_group_only(proxy, alice, media):
    """The installer's permissions are enough and no more is needed: the file is not the
    workers' (nor anyone else's but its owner's and the group's), and without the group's
    read bit nginx cannot serve it."""
    assert workers_gids(proxy) and worker_group() in workers_gids(proxy)
    image = attach(alice, ("photo.png", files.png(), "image/png"))[0]
    path = Path(image.file.path)
    st = path.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o640, worker_group())
    assert st.st_uid == os.geteuid() != pwd.getpwnam("nobody").pw_uid
    url = f"/ai-chat/attachments/{image.pk}/"
    with client(proxy.url) as http:
        cookies: dict[str, str] = {}
        assert sign_in(http, PASSWORD, cookies).status_code == 302
        response = http.get(url, headers=cookie_header(cookies))
        assert response.status_code == 200
        assert response.content == path.read_bytes()
        path.chmod(0o600)  # the group's read bit is what nginx used
        assert http.get(url, headers=cookie_header(cookies)).status_code == 403


def test_nginx_gives_another_user_nothing(proxy, alice, bob, media):
    image = attach(bob, ("photo.png", files.png(), "image/png"))[0]
    with client(proxy.url) as http:
        cookies: dict[str, str] = {}
        sign_in(http, PASSWORD, cookies)
        response = http.get(f"/ai-chat/attachments/{image.pk}/", headers=cookie_header(cookies))
    assert response.status_code == 404
    assert b"\x89PNG" not in response.content


def test_the_stream_location_takes_a_message_with_its_files_but_not_more(proxy, alice):
    with client(proxy.url) as http:
        cookies: dict[str, str] = {}
        sign_in(http, PASSWORD, cookies)
        page = http.get("/ai-chat/", headers=cookie_header(cookies))
        cookies.update(page.cookies)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        headers = {**cookie_header(cookies), "X-CSRFToken": token.group(1) if token else ""}
        # 4 MiB: over the site's default 2 MiB, within the stream location's limit. The panel
        # answers (409: alice has no key), so the body went through.
        body = {"files": ("a.txt", b"a" * (4 * 1024 * 1024), "text/plain")}
        response = http.post(
            "/ai-chat/stream/", data={"message": "hi"}, files=body, headers=headers
        )
        assert response.status_code == 409, response.text[:300]
        too_big = {"files": ("a.txt", b"a" * (22 * 1024 * 1024), "text/plain")}
        try:
            response = http.post(
                "/ai-chat/stream/", data={"message": "hi"}, files=too_big, headers=headers
            )
        except httpx.HTTPError:
            return  # nginx may close the connection while the body is still being sent
        assert response.status_code == 413
