"""The append action: every escape refused and logged, two steps, conflicts, undo, concurrency."""

from __future__ import annotations

import json
import os
import threading

import pytest
from django.test import Client

from ai_chat.models import ActionLog, ChangeStatus, FileChange
from tests.conftest import signed_in, user_with_permissions

APPEND, CONFIRM = "/api/actions/append/", "/api/actions/append/confirm/"


@pytest.fixture
def root(tmp_path, settings):
    workspace = tmp_path / "workspace"
    (workspace / "pkg").mkdir(parents=True)
    (workspace / "pkg" / "util.py").write_text("def one():\n    return 1\n")
    (workspace / "notes.md").write_text("# Notes\n")
    settings.FILE_ACTIONS_ROOT = str(workspace)
    return workspace


@pytest.fixture
def writer(db):
    return user_with_permissions("wendy", "write_files")


@pytest.fixture
def writer_client(writer):
    return signed_in(writer)


def post(client, url, **body):
    response = client.post(url, json.dumps(body), content_type="application/json")
    return response.status_code, response.json()


def tree(path):
    """Every file under `path` with its bytes, symlinks as their targets."""
    result = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            if os.path.islink(full):
                result[full] = ("link", os.readlink(full))
            elif os.path.isfile(full):
                result[full] = open(full, "rb").read()
    return result


def test_preview_changes_nothing_then_confirm_appends_exactly_the_content(writer_client, root):
    before = tree(root)
    status, body = post(
        writer_client, APPEND, path="pkg/util.py", content="\ndef two():\n    return 2\n"
    )
    assert status == 200, body
    assert "+def two():" in body["preview"]
    assert body["preview"].startswith("--- a/pkg/util.py\n+++ b/pkg/util.py")
    assert tree(root) == before
    status, body = post(writer_client, CONFIRM, token=body["token"])
    assert status == 200, body
    assert body["ok"] is True
    assert (
        root / "pkg" / "util.py"
    ).read_text() == "def one():\n    return 1\n\ndef two():\n    return 2\n"
    assert FileChange.objects.get(pk=body["change"]).status == ChangeStatus.APPLIED


def test_a_token_is_single_use(writer_client, root):
    _, body = post(writer_client, APPEND, path="notes.md", content="- one\n")
    token = body["token"]
    assert post(writer_client, CONFIRM, token=token)[0] == 200
    status, body = post(writer_client, CONFIRM, token=token)
    assert status == 400
    assert "used" in body["error"]
    assert (root / "notes.md").read_text() == "# Notes\n- one\n"


def test_an_expired_token_is_refused(writer_client, root, settings):
    settings.FILE_ACTIONS_TOKEN_SECONDS = -1
    _, body = post(writer_client, APPEND, path="notes.md", content="- late\n")
    status, body = post(writer_client, CONFIRM, token=body["token"])
    assert status == 400
    assert "expired" in body["error"]
    assert (root / "notes.md").read_text() == "# Notes\n"


def test_someone_elses_token_is_refused(writer_client, root, admin_user):
    _, body = post(writer_client, APPEND, path="notes.md", content="- mine\n")
    admin = Client()
    admin.force_login(admin_user)
    status, _ = post(admin, CONFIRM, token=body["token"])
    assert status == 400
    assert (root / "notes.md").read_text() == "# Notes\n"


def test_a_new_file_can_be_created_in_an_existing_directory(writer_client, root):
    _, body = post(writer_client, APPEND, path="pkg/new_module.py", content="X = 1\n")
    assert "+X = 1" in body["preview"]
    assert post(writer_client, CONFIRM, token=body["token"])[0] == 200
    assert (root / "pkg" / "new_module.py").read_text() == "X = 1\n"


def test_a_file_changed_since_the_preview_is_a_conflict_with_a_fresh_preview(writer_client, root):
    _, body = post(writer_client, APPEND, path="notes.md", content="- planned\n")
    (root / "notes.md").write_text("# Notes, rewritten\n")
    status, conflict = post(writer_client, CONFIRM, token=body["token"])
    assert status == 409
    assert "changed" in conflict["error"]
    assert "# Notes, rewritten" in conflict["preview"]
    assert (root / "notes.md").read_text() == "# Notes, rewritten\n"
    assert post(writer_client, CONFIRM, token=conflict["token"])[0] == 200
    assert (root / "notes.md").read_text() == "# Notes, rewritten\n- planned\n"
    assert ActionLog.objects.filter(kind="confirm", outcome="conflict").count() == 1


def test_undo_restores_the_file(writer_client, root):
    _, body = post(writer_client, APPEND, path="pkg/util.py", content="# appended\n")
    _, body = post(writer_client, CONFIRM, token=body["token"])
    status, undone = post(writer_client, f"/api/actions/changes/{body['change']}/undo/")
    assert status == 200, undone
    assert (root / "pkg" / "util.py").read_text() == "def one():\n    return 1\n"
    assert post(writer_client, f"/api/actions/changes/{body['change']}/undo/")[0] == 400


def test_undo_of_a_new_file_removes_it(writer_client, root):
    _, body = post(writer_client, APPEND, path="fresh.txt", content="hello\n")
    _, body = post(writer_client, CONFIRM, token=body["token"])
    post(writer_client, f"/api/actions/changes/{body['change']}/undo/")
    assert not (root / "fresh.txt").exists()


def test_undo_refuses_when_the_file_changed_since(writer_client, root):
    _, body = post(writer_client, APPEND, path="notes.md", content="- a\n")
    _, body = post(writer_client, CONFIRM, token=body["token"])
    with open(root / "notes.md", "a") as handle:
        handle.write("- edited by hand\n")
    status, answer = post(writer_client, f"/api/actions/changes/{body['change']}/undo/")
    assert status == 409
    assert (root / "notes.md").read_text() == "# Notes\n- a\n- edited by hand\n"


def test_undo_checks_ownership(writer_client, root, admin_user):
    _, body = post(writer_client, APPEND, path="notes.md", content="- a\n")
    _, body = post(writer_client, CONFIRM, token=body["token"])
    admin = Client()
    admin.force_login(admin_user)
    assert post(admin, f"/api/actions/changes/{body['change']}/undo/")[0] == 404


@pytest.mark.parametrize(
    "path,message",
    [
        ("../outside.py", "`..`"),
        ("pkg/../../outside.py", "`..`"),
        ("/etc/passwd", "Absolute paths"),
        ("pkg/util.py\x00.md", "NUL"),
        ("pkg\\util.py", "Backslashes"),
        ("C:/Windows/win.ini", "Drive letters"),
        ("pkg/util\uff0epy", "look-alike"),  # a full-width dot
        ("pkg/\u2025/util.py", "look-alike"),
        (".env", "Dotfiles"),
        ("pkg/.hidden.py", "Dotfiles"),
        (".git/config.txt", "Dotfiles"),
        ("settings.py", "not allowed"),
        ("pkg/bsepar.service", "not allowed"),
        ("run.sh", "extension"),
        ("binary.exe", "extension"),
        ("Makefile", "extension"),
        ("", "Send `path`"),
        ("pkg//util.py", "Empty"),
        ("missing/dir/file.py", "does not exist"),
    ],
)
def test_bad_paths_are_refused_logged_and_nothing_is_written(
    writer_client, writer, root, path, message
):
    before = tree(root)
    status, body = post(writer_client, APPEND, path=path, content="x = 1\n")
    assert status == 400, body
    assert message in body["error"]
    assert tree(root) == before
    assert not FileChange.objects.exists()
    log = ActionLog.objects.get()
    assert (log.kind, log.outcome, log.user) == ("append", "refused", writer)


def test_a_symlink_on_the_way_is_refused(writer_client, root, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "target.py").write_text("secret = 1\n")
    os.symlink(outside, root / "linkdir")
    os.symlink(outside / "target.py", root / "pkg" / "link.py")
    before = tree(tmp_path)
    for path in ("linkdir/target.py", "pkg/link.py"):
        status, body = post(writer_client, APPEND, path=path, content="x = 1\n")
        assert status == 400, (path, body)
        assert "symlink" in body["error"]
    assert tree(tmp_path) == before


def test_a_symlink_swapped_in_after_the_preview_is_refused_at_confirm(
    writer_client, root, tmp_path
):
    outside = tmp_path / "outside.py"
    outside.write_text("keep = 1\n")
    _, body = post(writer_client, APPEND, path="pkg/util.py", content="x = 1\n")
    os.unlink(root / "pkg" / "util.py")
    os.symlink(outside, root / "pkg" / "util.py")
    status, answer = post(writer_client, CONFIRM, token=body["token"])
    assert status == 400
    assert outside.read_text() == "keep = 1\n"


@pytest.mark.parametrize(
    "content,message",
    [
        ("x" * (10 * 1024 * 1024), "too large"),
        ("a\x00b", "NUL"),
        ("\udcff", "UTF-8"),
        ("", "nothing to append"),
        (123, "as text"),
    ],
)
def test_bad_content_is_refused(writer_client, root, content, message):
    before = tree(root)
    status, body = post(writer_client, APPEND, path="notes.md", content=content)
    assert status == 400
    assert message in body["error"]
    assert tree(root) == before


def test_a_file_may_not_grow_past_the_cap(writer_client, root, settings):
    settings.FILE_ACTIONS_MAX_FILE_BYTES = 20
    status, body = post(writer_client, APPEND, path="notes.md", content="0123456789abcdef")
    assert status == 400
    assert "grow past" in body["error"]


def test_a_non_utf8_file_is_refused(writer_client, root):
    (root / "latin.txt").write_bytes(b"caf\xe9\n")
    status, body = post(writer_client, APPEND, path="latin.txt", content="more\n")
    assert status == 400
    assert "not UTF-8" in body["error"]


def test_the_action_is_off_without_a_root(writer_client, settings):
    settings.FILE_ACTIONS_ROOT = None
    status, body = post(writer_client, APPEND, path="notes.md", content="x\n")
    assert status == 400
    assert "FILE_ACTIONS_ROOT" in body["error"]


def test_without_the_permission_it_is_forbidden(alice_client, root):
    status, _ = post(alice_client, APPEND, path="notes.md", content="x\n")
    assert status == 403
    assert post(alice_client, CONFIRM, token="whatever")[0] == 403
    assert ActionLog.objects.filter(outcome="forbidden").count() == 2


@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_confirms_leave_twenty_whole_lines(root, writer):
    client = Client()
    client.force_login(writer)
    line = "line {n:02d} " + "x" * 2000 + "\n"
    tokens = [
        post(client, APPEND, path="notes.md", content=line.format(n=n))[1]["token"]
        for n in range(20)
    ]
    results: list[int] = []
    barrier = threading.Barrier(20)

    def confirm(token):
        from django.db import connection

        own = Client()
        own.force_login(writer)
        barrier.wait(timeout=30)
        try:
            results.append(post(own, CONFIRM, token=token)[0])
        finally:
            connection.close()

    threads = [threading.Thread(target=confirm, args=(t,)) for t in tokens]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert results == [200] * 20
    lines = (root / "notes.md").read_text().splitlines()
    assert lines[0] == "# Notes"
    body = lines[1:]
    assert len(body) == 20
    assert sorted(body) == sorted(line.format(n=n).rstrip("\n") for n in range(20))


def test_a_hard_link_to_a_file_outside_the_root_is_refused(writer_client, root, tmp_path):
    outside = tmp_path / "outside.py"
    outside.write_text("keep = 1\n")
    os.link(outside, root / "pkg" / "linked.py")
    before = tree(tmp_path)
    status, body = post(writer_client, APPEND, path="pkg/linked.py", content="x = 1\n")
    assert status == 400
    assert "hard links" in body["error"]
    assert tree(tmp_path) == before
    assert ActionLog.objects.get().outcome == "refused"


def test_a_hard_link_made_after_the_preview_is_refused_at_confirm(writer_client, root, tmp_path):
    _, body = post(writer_client, APPEND, path="notes.md", content="- one\n")
    os.link(root / "notes.md", tmp_path / "elsewhere.md")
    status, answer = post(writer_client, CONFIRM, token=body["token"])
    assert status == 400
    assert "hard links" in answer["error"]
    assert (tmp_path / "elsewhere.md").read_text() == "# Notes\n"


@pytest.mark.django_db(transaction=True)  # the request runs on a thread of its own
@pytest.mark.parametrize("url", [APPEND, CONFIRM])
def test_a_fifo_is_refused_at_once_not_waited_on(writer_client, root, url):
    if url == CONFIRM:
        _, body = post(writer_client, APPEND, path="pipe.md", content="x\n")
        token = body["token"]
    os.mkfifo(root / "pipe.md")
    # Without O_NONBLOCK, opening a FIFO with no writer blocks forever: run the request on a
    # thread and give it a bounded wait instead of hanging the suite.
    result: dict[str, object] = {}

    def request() -> None:
        from django.db import connection

        try:
            if url == APPEND:
                result["answer"] = post(writer_client, APPEND, path="pipe.md", content="x\n")
            else:
                result["answer"] = post(writer_client, CONFIRM, token=token)
        finally:
            connection.close()

    thread = threading.Thread(target=request, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "the request hung on the FIFO"
    status, answer = result["answer"]
    assert status == 400
    assert "not a regular file" in answer["error"]
